"""Choose the video task's defaults: candidates x synthetic difficulty (easy, hard) x seeds.

Each run trains in this process as one Ray worker would (``cluster.fit``: the same builder, data,
augmentation, learning-rate schedule and early stopping as ``rnnforge train video``) and scores
the test split (on ``--difficulty hard``: characters dressed unlike any training character).
Prints one JSON line per run and appends it to ``--output``; ``--table FILE`` prints the
markdown table of such a file (docs/video.md holds it).

    nice -n 5 .venv/bin/python benchmarks/experiments/video_defaults.py --candidates plain,chosen \\
        --difficulties hard --seeds 0,1 [--output /tmp/video_defaults.jsonl]
    .venv/bin/python benchmarks/experiments/video_defaults.py --table /tmp/video_defaults.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rnnforge  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

#: Candidates: TrainConfig options (over the task's defaults) and the builder's keywords.
#: ``before`` is main's defaults before issue 22; ``plain`` the issue's reference model.
CANDIDATES = {
    "before": {
        "options": {"learning_rate": 2e-3, "lr_warmup": 0, "patience_start": 0, "augment": False},
        "model": {"filters": (16, 32, 48), "pool_grid": 4, "batch_norm": False, "features": 96},
        "epochs": 16,
        "patience": 4,
    },
    "plain": {
        "options": {
            "learning_rate": 1e-3,
            "lr_schedule": "constant",
            "lr_warmup": 0,
            "clipnorm": 0,
            "dropout": 0,
            "augment": False,
        },
        "model": {"filters": (16, 32, 64), "pool_grid": None, "batch_norm": False, "features": 128},
        "epochs": 20,
        "patience": 0,
    },
    "bn": {  # BatchNorm, 16-32-64 pooled to 4x4, no augmentation
        "options": {"learning_rate": 2e-3, "augment": False},
        "model": {"filters": (16, 32, 64), "pool_grid": 4, "batch_norm": True, "features": 128},
    },
    "bn_aug": {  # ... with augmentation
        "options": {"learning_rate": 2e-3, "augment": True},
        "model": {"filters": (16, 32, 64), "pool_grid": 4, "batch_norm": True, "features": 128},
    },
    "wide_aug": {  # wider CNN, BatchNorm, augmentation
        "options": {"learning_rate": 2e-3, "augment": True},
        "model": {"filters": (32, 64, 96), "pool_grid": 4, "batch_norm": True, "features": 128},
    },
    "bn_aug_max": {  # BatchNorm, max pooling, augmentation
        "options": {"learning_rate": 2e-3, "augment": True},
        "model": {"filters": (16, 32, 64), "pool_grid": 4, "pooling": "max", "batch_norm": True, "features": 128},
    },
    "chosen": {},
    "chosen_aug": {"options": {"augment": True}},  # the defaults with augmentation forced on
    "chosen_no_aug": {
        "options": {"augment": False}
    },  # ... forced off  # the task's defaults as they stand (models/video.py)
}


def run(candidate: str, difficulty: str, seed: int, frames: int, epochs: int | None) -> dict:
    import numpy as np

    from rnnforge.cluster.fit import batches, fit, prepare
    from rnnforge.models.resolve import resolve_config

    plan = CANDIDATES[candidate]
    options = {"difficulty": difficulty, "frames": frames, "seed": seed, "workers": 1, **plan.get("options", {})}
    for key in ("epochs", "patience"):
        if key in plan:
            options[key] = plan[key]
    if epochs:
        options["epochs"] = epochs
    config = resolve_config("video", options)
    trained = prepare(config, model_options=plan.get("model"))
    train, valid = batches(trained)
    started = time.perf_counter()
    history = fit(trained, train, valid).history
    model, data = trained.model, trained.data
    x_test, y_test = data.splits["test"]
    predicted = model.predict(x_test, batch_size=64, verbose=0).argmax(axis=1)
    names = np.array(data.info["class_names"])
    parts = {  # how often each half of "action_facing" (or "shape_motion") is right
        f"{half}_accuracy": round(
            float(np.mean([a.split("_")[i] == b.split("_")[i] for a, b in zip(names[predicted], names[y_test])])), 4
        )
        for i, half in enumerate(("first", "second"))
    }
    return {
        "candidate": candidate,
        "difficulty": difficulty,
        "frames": frames,
        "seed": seed,
        "epochs_run": len(history["loss"]),
        "loss": [round(v, 3) for v in history["loss"]],
        "val_accuracy": [round(v, 3) for v in history["val_accuracy"]],
        "test_accuracy": round(float(np.mean(predicted == y_test)), 4),
        **parts,
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(path: str) -> str:
    """Markdown: one row per candidate and difficulty, test accuracy per seed, mean, epochs run."""
    import numpy as np

    rows: dict[tuple[str, str], list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        result = json.loads(line)
        rows.setdefault((result["difficulty"], result["candidate"]), []).append(result)
    out = [
        "| difficulty | candidate | test accuracy per seed | mean | epochs run | action / facing right (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for (difficulty, candidate), results in rows.items():
        accuracies = [r["test_accuracy"] for r in results]
        halves = " / ".join(f"{np.mean([r[k] for r in results]):.3f}" for k in ("first_accuracy", "second_accuracy"))
        out.append(
            f"| {difficulty} | {candidate} | {', '.join(f'{a:.3f}' for a in accuracies)} | "
            f"{np.mean(accuracies):.3f} | {', '.join(str(r['epochs_run']) for r in results)} | {halves} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default="chosen")
    parser.add_argument("--difficulties", default="easy,hard")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="override every candidate's epochs")
    parser.add_argument("--output", default="/tmp/video_defaults.jsonl")
    parser.add_argument("--table", metavar="FILE", help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    for difficulty in args.difficulties.split(","):
        for candidate in args.candidates.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                result = run(candidate, difficulty, seed, args.frames, args.epochs)
                print(json.dumps(result), flush=True)
                with open(args.output, "a") as out:
                    out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
