"""Turn a finished Ray Train run into a run dir.

``finish_run`` takes the final checkpoint the workers reported, scores its model on the
validation and test splits, and writes ``model.keras``, ``architecture.txt``, the plots,
``metrics.json`` and, last, ``config.json`` (the ``TrainConfig``'s fields plus the data's
``info``, ``num_examples`` and the library ``versions``), which marks the run finished. ``cluster.launch.train`` calls it after
``trainer.fit()``; tests call it on a checkpoint they made without Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
from rnnforge.core import fileio, plots
from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.core.machine import versions
from rnnforge.core.run_dir import RunDir
from rnnforge.models.spec import TaskData


def finish_run(
    config: TrainConfig,
    run: RunDir,
    checkpoint,
    train_seconds: float,
    timing: dict | None = None,
    data: TaskData | None = None,
    devices: list[dict] | None = None,
) -> dict:
    """Copy the final model out of ``checkpoint`` (a ``ray.train.Checkpoint``), score it, write
    the run dir; returns metrics.json's content.

    ``timing``: the driver's ``started_at`` (wall clock) and seconds per phase, completed here with
    the workers' (start-up until ``fit``, ``fit``, checkpoint saving) for metrics.json. ``data``:
    the driver's already loaded data (loaded from ``config`` when not given). ``devices``: each
    worker's record of what it trained on (``cluster.devices``), by rank."""
    from rnnforge.models import get_spec

    spec = get_spec(config.task)
    data = spec.load_data(config) if data is None else data
    state, model, companions = _final_model(config, spec, data, checkpoint)
    check_finite_loss(state["history"])
    calibration = spec.calibrate(model, config, data) if spec.calibrate else None
    scores = _score(model, spec, data, run)
    for name, companion in companions.items():  # e.g. a distilled forecaster's ensemble, scored beside it
        scores[name] = _score(companion, spec, data, run, with_plots=False)
    for path, served in ((run.model, model), *((run.companion(n), m) for n, m in companions.items())):
        with fileio.atomic_path(path, suffix=".keras") as tmp:
            served.save(tmp, save_format="keras_v3")
    lines: list[str] = []
    model.summary(print_fn=lines.append, expand_nested=True)
    fileio.write_text(run.architecture, "\n".join(lines) + "\n")
    history = state["history"]
    plots.training_curve(history, run.path / "training_curve.png", spec.metrics[0])
    metrics = {
        "task": config.task,
        "dataset": config.dataset,
        "epochs_run": state["epoch"],
        "restarts": state["restarts"],
        "workers": state["world_size"],
        "resizes": state.get("resizes", []),  # an elastic group's restarts at another size
        "train_seconds": round(train_seconds, 1),
        "samples_per_s": _mean([h["samples_per_s"] for h in history]),
        "samples_per_s_per_worker": _mean([h["samples_per_s_per_worker"] for h in history]),
        "timing": _timing(timing or {}, state),
        "devices": devices or [],
        "history": history,
        **scores,
        **({"calibration": calibration} if calibration else {}),
        "companions": list(companions),  # served models scored beside the run's own, e.g. ["ensemble"]
        "warnings": _score_warnings(spec, data, scores),
    }
    fileio.write_json(run.metrics, metrics)
    # config.json last: it marks a finished run (cluster.storage.prepare_run_dir), so a run
    # interrupted before it is resumed, not taken for finished
    fileio.write_json(
        run.config,
        {
            **config.to_dict(),
            "info": data.info,
            "num_examples": {s: data.num_examples(s) for s in data.splits},
            "versions": versions(),
        },
    )
    for line in metrics["warnings"]:
        print(line, flush=True)
    return metrics


def _score_warnings(spec, data, scores: dict) -> list[str]:
    """Scores that say the model did not learn get one line each; metrics.json, the console and
    the report carry them. A classifier: validation accuracy (test, when validation is empty)
    within noise of chance (``models.common.chance_warning``). A forecaster: a split's MAE not
    below the naive forecast's (``models.forecast.naive_warning``)."""
    from rnnforge.models.common import chance_warning
    from rnnforge.models.forecast import naive_warning, training_days

    names = {"valid": "validation", "test": "test"}
    if spec.kind == "forecast":
        ratios = {split: scores[split]["mae_vs_naive"] for split in names if scores[split].get("examples")}
        days = training_days(data) if ratios else 0
        lines = [naive_warning(r, names[split], scores[split]["examples"], days) for split, r in ratios.items()]
        return [line for line in lines if line]
    split = "valid" if scores["valid"].get("examples") else "test"
    if spec.kind != "classification" or not scores[split].get("examples"):
        return []
    line = chance_warning(
        scores[split]["accuracy"], len(data.info["class_names"]), scores[split]["examples"], names[split]
    )
    return [line] if line else []


def _final_model(config: TrainConfig, spec, data, checkpoint):
    """The checkpoint's ``state.json``, the served form of its model (float32) and the served
    models kept beside it (``TaskSpec.companion_models``: name -> model)."""
    from tensorflow import keras

    with checkpoint.as_directory() as ckpt_dir:
        state = json.loads((Path(ckpt_dir) / CHECKPOINT_STATE).read_text())
        trained = keras.models.load_model(Path(ckpt_dir) / CHECKPOINT_MODEL, compile=False)
    if config.mixed_precision:
        trained = _float32_twin(trained, spec, config, data.info)
    return state, spec.to_serving(trained, config, data.info), spec.companions(trained, config, data.info)


def check_finite_loss(history: list[dict]) -> None:
    """Refuse a run whose last epoch's loss (or any figure of it) is NaN or infinite: such a
    model is no finished run, and its export would fail."""
    last = history[-1] if history else {}
    bad = {k: v for k, v in last.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise UserError(
            f"training diverged: epoch {last.get('epoch', '?')} ended with "
            + ", ".join(f"{k} {v}" for k, v in bad.items())
            + "; no finished run was written (check the data's range, or lower --learning-rate)"
        )


def _score(model, spec, data, run: RunDir, with_plots: bool = True) -> dict:
    """The task's scores on valid and test; the task's plots of the evaluation split (unless not
    ``with_plots``). Refuses scores that are not finite before any plot is written."""
    scores, plotted = {}, None
    for split in ("valid", "test"):
        x, y = data.splits[split]
        if not len(y):  # y: x may be a dict of named inputs
            scores[split] = {"examples": 0}
            continue
        predictions = model.predict(x, batch_size=256, verbose=0)
        scores[split] = {"examples": int(len(y)), **spec.score(x, y, predictions, data.info)}
        bad = [k for k, v in scores[split].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise UserError(
                f"training diverged: the {split} split's {', '.join(bad)} "
                f"{'is' if len(bad) == 1 else 'are'} not finite; no finished run was written "
                "(check the data's range, or lower --learning-rate)"
            )
        if split == data.evaluation_split():
            plotted = (x, y, predictions, split)
    if plotted and with_plots:
        x, y, predictions, split = plotted
        spec.report_plots(x, y, predictions, data, split, run.path)
    return scores


def _timing(driver: dict, state: dict) -> dict:
    """Where a run's seconds went: data loading and Ray start-up in the driver, start-up until the
    workers' ``fit`` (their TF import, data, model, strategy), ``fit`` itself and, inside it,
    saving per-epoch checkpoints (the gaps between epochs)."""
    out = {k: v for k, v in driver.items() if k != "started_at"}
    if "started_at" in driver and "fit_started_at" in state:
        out["until_fit_s"] = state["fit_started_at"] - driver["started_at"]
    out.update(
        {f"{k.removesuffix('_seconds')}_s": state[k] for k in ("fit_seconds", "checkpoint_seconds") if k in state}
    )
    return {k: round(v, 1) for k, v in out.items()}


def _float32_twin(trained, spec, config: TrainConfig, info: dict):
    """The task's model built in float32 with the weights of ``trained`` (trained under
    mixed_float16, whose weights are float32 already): what export and CPU inference want."""
    from tensorflow import keras

    keras.mixed_precision.set_global_policy("float32")
    twin = spec.build_model(config, info)
    twin.set_weights(trained.get_weights())
    return twin


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None
