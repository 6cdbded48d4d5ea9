"""Which forecast defaults hold across series, and what the day-type covariates buy.

Trains the forecast task in this process as one Ray worker would (``cluster.fit``, one thread),
candidate by candidate, on each series (CTA rail, bus, total with ``--data-dir``; the embedded
synthetic one; ``--series csv --csv FILE``: any ``date,value`` file, e.g. the daily bike counts that
``bikeshare_daily.py`` builds from a PyPI package's data), with and without covariates, for several seeds, and scores the served model on
the validation windows (Jan-May 2019 by default) against the naive 7-day-lag forecast: mean
7-day MAE, its ratio to naive, and MAE per horizon day +1..+7. ``--ensemble N`` trains N
averaged members (the task's ``--ensemble``); ``--heldout`` trains on 2015-2017, stops on Jan-May
2018 and scores June 2018-May 2019 too (``test_`` fields), so that a choice made on the 2019
windows is checked on windows nothing was chosen on. One JSON line per run goes to
``--output`` (appended, so an interrupted sweep keeps what it measured); ``--table`` prints the
Markdown tables of docs/forecasting.md from such a file.

    nice -n 5 .venv/bin/python benchmarks/experiments/forecast_defaults.py --data-dir ../shared/data/cta_ridership \\
        --series rail,bus,total,synthetic --candidates current,plain --covariates day_type,none \\
        --seeds 1,2,3 --output benchmarks/experiments/forecast_defaults.jsonl
    .venv/bin/python benchmarks/experiments/forecast_defaults.py --table benchmarks/experiments/forecast_defaults.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rnnforge  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

#: Candidate defaults: changes to the forecast task's defaults (``models/forecast.py``).
CANDIDATES = {
    # the defaults before issue #18: LSTM(32) x 2, MAE, lr 2e-3, dropout 0.3, cosine schedule, patience 20
    "current": {"units": 32, "dropout": 0.3, "lr_schedule": "cosine", "patience": 20},
    # the plain baseline: LSTM(32) x 2, MAE, no dropout, constant lr 2e-3
    "plain": {"units": 32, "dropout": 0.0, "lr_schedule": "constant", "patience": 20},
    "plain_d01": {"units": 32, "dropout": 0.1, "lr_schedule": "constant", "patience": 20},
    "cosine_d0": {"units": 32, "dropout": 0.0, "lr_schedule": "cosine", "patience": 20},
    "plain_u64": {"dropout": 0.0, "lr_schedule": "constant", "patience": 20, "units": 64},
    # the chosen defaults with CTA bus as a second input column beside rail (Géron's multivariate RNN)
    "cosine_d0_u64_p30": {"dropout": 0.0, "lr_schedule": "cosine", "patience": 30, "units": 64},
    "cosine_d0_u64_bus": {"dropout": 0.0, "lr_schedule": "cosine", "patience": 20, "units": 64, "with_bus": True},
    "current_u64": {"units": 64, "dropout": 0.3, "lr_schedule": "cosine", "patience": 20},
    "plain_u64_w28": {"dropout": 0.0, "lr_schedule": "constant", "patience": 20, "units": 64, "window": 28},
    "plain_u64_w84": {"dropout": 0.0, "lr_schedule": "constant", "patience": 20, "units": 64, "window": 84},
    "plain_2012": {"units": 32, "dropout": 0.0, "lr_schedule": "constant", "patience": 20, "train_start": "2012-01-01"},
    "plain_u64_2012": {
        "dropout": 0.0,
        "lr_schedule": "constant",
        "patience": 20,
        "units": 64,
        "train_start": "2012-01-01",
    },
    "cosine_d0_u64": {"dropout": 0.0, "lr_schedule": "cosine", "patience": 20, "units": 64},
    # the same without issue #22's warm-ups, as the sweep of docs/forecasting.md ran
    "cosine_d0_u64_nowarmup": {
        "dropout": 0.0,
        "lr_schedule": "cosine",
        "patience": 20,
        "units": 64,
        "lr_warmup": 0,
        "patience_start": 0,
    },
    "plain_lr1e3": {"units": 32, "dropout": 0.0, "lr_schedule": "constant", "patience": 30, "learning_rate": 1e-3},
    "plain_b64": {"units": 32, "dropout": 0.0, "lr_schedule": "constant", "patience": 20, "batch_size": 64},
}
GLOBAL_BATCH = 32  # the CLI's default: 16 per worker x 2 workers, here one worker's batch
#: ``--heldout``: train 2015-2017, validate (early stopping) on Jan-May 2018, test June 2018 on.
HELDOUT = {"train_start": "2015-01-01", "train_end": "2017-12-31", "valid_end": "2018-05-31"}


def run_one(series: str, candidate: str, covariates: str, seed: int, args) -> dict:
    """Train one candidate on one series with one seed; the served model's validation scores."""
    from rnnforge.cluster.fit import batches, fit, prepare
    from rnnforge.models import get_spec
    from rnnforge.models.resolve import resolve_config

    changes = dict(CANDIDATES[candidate])
    with_bus = changes.pop("with_bus", False)
    options = {"covariates": covariates, "seed": seed, "epochs": args.epochs, "ensemble": args.ensemble}
    if args.quantiles:  # issue #32: quantile outputs, the pinball loss
        options["quantiles"] = args.quantiles
    options.update(workers=1, batch_size=GLOBAL_BATCH, **changes)  # one process trains the global batch
    if args.heldout:
        options.update(HELDOUT)
    if series == "synthetic":
        options["dataset"] = "synthetic"
    elif series == "csv":  # --csv: a daily series a package ships (bikeshare_daily.py), its own split
        train_start, train_end, valid_end = args.csv_split.split(",")
        options.update(dataset="csv", data_dir=str(args.csv), value_column=args.csv_column, holidays=args.csv_holidays)
        options.update(train_start=train_start, train_end=train_end, valid_end=valid_end)
    else:
        options.update(dataset="cta_ridership", data_dir=args.data_dir, series=series)
    config = resolve_config("forecast", options)
    spec = get_spec("forecast")
    data = spec.load_data(config)
    if with_bus:
        add_bus_column(data, config)
    run = prepare(config, data=data)  # the Ray worker's: early stopping from --patience-start, lr warm-up
    train, valid = batches(run)
    if args.input == "arrays":  # every window each epoch, the last batch partial
        x_train, y_train = data.splits["train"]
        train = (x_train, spec.targets_for_training(x_train, y_train, data.info))
    started = time.perf_counter()
    history = fit(run, train, valid)
    model, (x_valid, y_valid) = run.model, data.splits["valid"]
    served = spec.to_serving(model, config, data.info)
    valid_pred = served.predict(x_valid, batch_size=256, verbose=0)
    scores = spec.score(x_valid, y_valid, valid_pred, data.info)
    if args.plots:  # the run dir's forecast.png and mae_per_horizon.png, of the validation windows
        folder = args.plots / f"{series}_{candidate}_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        if spec.calibrate and spec.calibrate(served, config, data):  # --conformal, as the CLI run's plots show it
            valid_pred = served.predict(x_valid, batch_size=256, verbose=0)
        spec.report_plots(x_valid, y_valid, valid_pred, data, "valid", folder)
    if args.heldout or series == "csv":  # a csv series' split has a test part nothing was chosen on
        x_test, y_test = data.splits["test"]
        test_pred = served.predict(x_test, batch_size=256, verbose=0)
        test = spec.score(x_test, y_test, test_pred, data.info)
        if config.quantiles:  # --conformal's scales fitted on the validation windows, scored on the test ones
            scores.update(conformal_on_test(served, data, test_pred))
        scores.update({f"test_{k}": v for k, v in test.items() if "_d+" not in k or "coverage" in k})
    return {
        "series": args.csv.stem if series == "csv" else series,
        "candidate": candidate,
        "covariates": covariates,
        "seed": seed,
        "input": args.input,
        "ensemble": config.ensemble,
        **({"quantiles": list(config.quantiles)} if config.quantiles else {}),
        "split": "heldout" if args.heldout else "default",
        "epochs_run": len(history.history["loss"]),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {
            k: v for k, v in dataclasses.asdict(config).items() if k in ("units", "dropout", "lr_schedule", "patience")
        },
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
    }


def conformal_on_test(served, data, test_pred) -> dict:
    """The test windows' interval coverage (overall and per day) and width once the intervals are
    scaled by the conformal scales of the validation windows (``--conformal``): out of sample."""
    import numpy as np

    from rnnforge.models.forecast import calibration_kernel, interval_scales, levels_of, point_and_quantiles

    levels = levels_of(data.info)
    (x_valid, y_valid), (_, y_test) = data.splits["valid"], data.splits["test"]
    _, valid_q = point_and_quantiles(served.predict(x_valid, batch_size=256, verbose=0))
    scales = interval_scales(y_valid, valid_q, levels)
    _, test_q = point_and_quantiles(test_pred)
    scaled = (test_q.reshape(len(test_q), -1) @ calibration_kernel(scales, levels)).reshape(test_q.shape)
    covered = np.mean((y_test >= scaled[..., 0]) & (y_test <= scaled[..., -1]), axis=0)
    out = {"test_conformal_coverage": float(covered.mean()), "conformal_scales": [round(s, 4) for s in scales]}
    out["test_conformal_width"] = float(np.mean(scaled[..., -1] - scaled[..., 0]))
    out.update({f"test_conformal_coverage_d+{d + 1}": float(c) for d, c in enumerate(covered)})
    return out


def add_bus_column(data, config) -> None:
    """Put CTA bus boardings beside the series as a second input column (standardised with the
    series' statistics: both are riders per day of similar size)."""
    import numpy as np

    from rnnforge.models import get_spec

    bus = get_spec("forecast").load_data(dataclasses.replace(config, series="bus", covariates="none"))
    for split, (x, y) in data.splits.items():
        values = x["series"] if isinstance(x, dict) else x
        stacked = np.concatenate([values, bus.splits[split][0]], axis=-1)
        if isinstance(x, dict):
            x["series"] = stacked
        else:
            data.splits[split] = (stacked, y)
    data.info["columns"] = 2


def table(path: Path) -> str:
    """Markdown: per (series, candidate, covariates), MAE / naive over the seeds (mean, min-max);
    and MAE per horizon day +1..+7 (mean ± standard deviation over the seeds), the naive
    forecast's first for each series."""
    import numpy as np

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        groups.setdefault((row["series"], _label(row), row["covariates"]), []).append(row)
    out = [
        "| series | candidate | covariates | seeds | MAE / naive (mean, min-max) | mean 7-day MAE | naive MAE | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (series, candidate, covariates), runs in sorted(groups.items()):
        ratio = np.array([r["mae_vs_naive"] for r in runs])
        mae = np.array([r["mae"] for r in runs])
        out.append(
            f"| {series} | {candidate} | {covariates} | {','.join(str(r['seed']) for r in runs)} | "
            f"{ratio.mean():.3f} ({ratio.min():.3f}-{ratio.max():.3f}) | {mae.mean():,.0f} | "
            f"{runs[0]['naive_mae']:,.0f} | {np.mean([r['epochs_run'] for r in runs]):.0f} |"
        )
    days = range(1, 8)
    out += [
        "",
        "| series | candidate | covariates | " + " | ".join(f"+{d}" for d in days) + " |",
        "|---|---|---|" + "---|" * len(days),
    ]
    shown = set()
    for (series, candidate, covariates), runs in sorted(groups.items()):
        if series not in shown:  # the naive forecast's, the same for every run on the series
            shown.add(series)
            out.append(
                f"| {series} | naive | | " + " | ".join(f"{runs[0][f'naive_mae_d+{d}']:,.0f}" for d in days) + " |"
            )
        cells = []
        for d in days:
            values = np.array([r[f"mae_d+{d}"] for r in runs])
            cells.append(f"{values.mean():,.0f} ±{values.std():,.0f}")
        out.append(f"| {series} | {candidate} | {covariates} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _label(row: dict) -> str:
    """The candidate, with its ensemble size and split where they are not the plain run's."""
    members, split = row.get("ensemble") or 1, row.get("split", "default")
    return row["candidate"] + (f" x{members}" if members > 1 else "") + (f" ({split})" if split != "default" else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/cta_ridership")
    parser.add_argument("--series", default="rail", help="comma-separated: rail, bus, total, synthetic, csv (--csv)")
    parser.add_argument("--csv", type=Path, help="--series csv: a date,value file (e.g. bikeshare_daily.py's)")
    parser.add_argument("--csv-column", default="riders", help="--series csv: the value column")
    parser.add_argument("--csv-holidays", help="--series csv: a file of holidays, one ISO date a line")
    parser.add_argument(
        "--csv-split",
        default="2011-01-01,2011-06-30,2011-09-30",
        help="--series csv: TRAIN_START,TRAIN_END,VALID_END (the test split follows; bikeshare_daily.py's 2011)",
    )
    parser.add_argument("--candidates", default="current,plain", help=f"comma-separated of {', '.join(CANDIDATES)}")
    parser.add_argument("--covariates", default="day_type,none")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument(
        "--input",
        choices=("arrays", "worker"),
        default="arrays",
        help="fit on arrays (every window, last batch partial), or on the Ray worker's batches with one worker "
        "(reproduces rnnforge train --workers 1 --batch-size 32 to the digit)",
    )
    parser.add_argument("--ensemble", type=int, help="averaged members (default: the task's)")
    parser.add_argument("--plots", type=Path, help="write the validation split's plots under this folder")
    parser.add_argument("--quantiles", help="quantile levels, e.g. 0.1,0.5,0.9 (issue #32; default: a point forecast)")
    parser.add_argument(
        "--heldout", action="store_true", help="train 2015-2017, validate Jan-May 2018, test on June 2018-May 2019"
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/experiments/forecast_defaults.jsonl"))
    parser.add_argument("--table", type=Path, help="print the Markdown tables of this JSONL file and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    for series in args.series.split(","):
        for candidate in args.candidates.split(","):
            for covariates in args.covariates.split(","):
                for seed in map(int, args.seeds.split(",")):
                    row = run_one(series, candidate, covariates, seed, args)
                    with open(args.output, "a") as out:
                        out.write(json.dumps(row) + "\n")
                    print(
                        f"{series:>9} {candidate:>10} {covariates:>8} seed {seed}: MAE {row['mae']:,.0f} "
                        f"({row['mae_vs_naive']:.3f}x naive {row['naive_mae']:,.0f}), "
                        f"{row['epochs_run']} epochs, {row['seconds']:.0f} s"
                        + (f", test {row['test_mae_vs_naive']:.3f}x" if "test_mae_vs_naive" in row else ""),
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
