"""Issue 22, every task: no run stops before it learns (early stopping's and the learning rate's
warm-ups), and a classifier that ended at chance, or a forecaster worse than the naive forecast,
says so (console, metrics.json, report)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import ROOT, make_run_dir, run_cli

from rnnforge.cluster.fit import early_stopping
from rnnforge.core.config import declared_defaults
from rnnforge.models.common import chance_warning, learning_rate, warmup_schedule, warmup_steps
from rnnforge.models.forecast import naive_warning
from rnnforge.models.resolve import resolve_config


def _signs(n: int, seed: int):
    """x = +-1, label 1 where x > 0."""
    x = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, 1)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _fit_slow_starter(config) -> tuple[int, float]:
    """A tiny deep-linear classifier started at a saddle (weights 1e-8): its validation loss stays
    exactly ln 2 (chance) for four epochs before it learns. Fitted with the worker's early stopping;
    returns (epochs run, validation accuracy of the final weights)."""
    from tensorflow import keras

    keras.utils.set_random_seed(0)
    eps = 1e-8
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(eps)),
            keras.layers.Dense(
                2, use_bias=False, activation="softmax", kernel_initializer=keras.initializers.Constant([[-eps, eps]])
            ),
        ]
    )
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy", ["accuracy"])
    (x, y), (x_valid, y_valid) = _signs(256, 0), _signs(64, 1)
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=12,
        validation_data=(x_valid, y_valid),
        callbacks=[early_stopping(config)],
        verbose=0,
    )
    return len(history.history["loss"]), model.evaluate(x_valid, y_valid, verbose=0)[1]


def test_early_stopping_waits_until_a_slow_starter_learns():
    config = resolve_config("sketch", {"patience": 3})
    assert config.patience_start == declared_defaults()["patience_start"] >= 5
    epochs, accuracy = _fit_slow_starter(config)
    assert epochs == 12 and accuracy == 1.0  # not stopped: it left chance and learned
    # Without the warm-up, the same fit stops at chance after 1 + patience epochs.
    epochs, accuracy = _fit_slow_starter(replace(config, patience_start=0))
    assert epochs == 4 and accuracy < 0.7


def test_every_task_warms_up_early_stopping():
    for task in ("sketch", "forecast", "video"):
        config = resolve_config(task, {})
        assert early_stopping(config).start_from_epoch == config.patience_start > 0
    assert early_stopping(resolve_config("sketch", {"patience": 0})) is None


def test_a_run_that_never_stops_ends_with_its_best_epochs_weights():
    """The worker saves the model after ``fit``: tf-keras' early stopping restores the best epoch's
    weights when training ends, stopped early or not, so a run that reaches --epochs is scored and
    exported with its best epoch's weights, not its last one's."""
    from tensorflow import keras

    config = resolve_config("forecast", {"patience": 50, "patience_start": 0, "epochs": 8})
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    weights: list[float] = []
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()[0].item())
    )
    # Fitted to 2x, validated on x: w passes the validation optimum (1) at epoch 2 and goes on to 2.
    history = model.fit(
        x, 2 * x, batch_size=64, epochs=8, validation_data=(x, x), callbacks=[early_stopping(config), keep], verbose=0
    )
    val_loss = history.history["val_loss"]
    assert len(val_loss) == 8 and int(np.argmin(val_loss)) == 1 < 7  # never stopped; best before the end
    final = model.get_weights()[0].item()
    assert final == pytest.approx(weights[1]) and final != pytest.approx(weights[-1])


def test_learning_rate_warms_up_then_follows_the_schedule():
    config = resolve_config("sketch", {"learning_rate": 1e-3, "lr_schedule": "cosine", "epochs": 10, "lr_warmup": 1})
    assert warmup_steps(config, 100) == 10
    schedule = learning_rate(config, total_steps=100)
    rates = [float(schedule(step)) for step in (0, 4, 9, 10, 55, 100)]
    assert rates[0] == pytest.approx(1e-3 / 11) and rates[1] == pytest.approx(1e-3 * 5 / 11)
    assert rates[2] == pytest.approx(1e-3 * 10 / 11) and rates[3] == pytest.approx(1e-3)  # the peak ends it
    assert rates[4] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5), rel=1e-4)  # cosine over the 90 steps after it
    assert rates[5] == pytest.approx(1e-3 * 0.05, rel=1e-4)
    constant = learning_rate(replace(config, lr_schedule="constant"), 100)
    assert float(constant(0)) < float(constant(5)) < float(constant(10)) == pytest.approx(1e-3)
    # At most a quarter of the run; none at all with --lr-warmup 0.
    assert warmup_steps(replace(config, lr_warmup=5), 100) == 25
    assert learning_rate(replace(config, lr_warmup=0, lr_schedule="constant"), 100) == 1e-3
    # It travels with a saved optimizer.
    rebuilt = warmup_schedule().from_config(schedule.get_config())
    assert float(rebuilt(55)) == pytest.approx(rates[4])


@pytest.mark.parametrize(
    ("accuracy", "classes", "examples", "warns"),
    [
        (0.05, 20, 200, True),  # chance itself
        (0.08, 20, 200, True),  # chance + 1.9 standard errors: noise
        (0.12, 20, 200, False),  # + 4.5 standard errors: it learned something
        (0.6, 2, 100, True),  # 2 classes, 100 examples: 0.6 is within noise
        (0.7, 2, 100, False),
        (None, 20, 200, False),
    ],
)
def test_chance_warning_rule(accuracy, classes, examples, warns):
    line = chance_warning(accuracy, classes, examples)
    assert (line is not None) == warns
    if warns:
        assert line.startswith("warning: validation accuracy") and "\n" not in line and "--epochs" in line


@pytest.mark.slow
def test_a_run_at_chance_says_so_in_console_metrics_and_report(tmp_path, capsys):
    """A video model whose output layer is zero predicts one class for every clip: at chance."""
    import ray.train

    from rnnforge.cluster.finish import finish_run
    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.core.run_dir import RunDir
    from rnnforge.models import get_spec

    config = resolve_config("video", {"frames": 4, "frame_size": 16, "epochs": 1})
    spec = get_spec("video")
    data = spec.load_data(config)
    model = spec.build_model(config, data.info)
    output = model.get_layer("probabilities")
    output.set_weights([np.zeros_like(w) for w in output.get_weights()])
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    model.save(ckpt / CHECKPOINT_MODEL, save_format="keras_v3")
    entry = {"epoch": 1, "loss": 2.48, "seconds": 1.0, "samples_per_s": 1.0, "samples_per_s_per_worker": 1.0}
    (ckpt / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 1, "history": [entry], "restarts": 0, "world_size": 1}))
    run = tmp_path / "run"
    finish_run(config, RunDir(run), ray.train.Checkpoint.from_directory(ckpt), 1.0, data=data)
    printed = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    (warning,) = metrics["warnings"]
    assert warning in printed and "within noise of chance (0.083 for 12 classes, 240 examples)" in warning
    assert run_cli("export", "onnx", run).returncode == 0
    fast = ("--batch-sizes", "1", "--warmup", "1", "--runs", "5", "--max-seconds", "0.1", "--tf-baseline", "none")
    bench = run_cli("bench", run, *fast)
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert f"**{warning}**" in (run / "bench" / "report.md").read_text()


@pytest.mark.parametrize(
    "ratio, train_days, expected",
    [
        (0.97, 181, None),  # better than repeating last week: nothing to say
        (1.0, 181, "span 181 days, less than a year"),  # no better: a season it never saw
        (1.54, 1096, "check that the training days are like the forecast days"),
    ],
)
def test_naive_warning_rule(ratio, train_days, expected):
    line = naive_warning(ratio, "test", 30, train_days)
    assert (line is None) == (expected is None)
    if expected:
        assert line.startswith(f"warning: test MAE is {ratio:.2f}x the naive forecast's") and "30 windows" in line
        assert expected in line and "\n" not in line


#: A daily series a PyPI package ships (benchmarks/experiments/bikeshare_daily.py): 2011 only.
BIKES = ROOT / "benchmarks" / "experiments" / "data"


@pytest.mark.slow
def test_a_forecaster_worse_than_naive_says_so_and_why(tmp_path, capsys):
    """Half a year of bike counts to train on, a briefly trained network: a split it forecasts worse
    than last week's values gets a line, which says the training days span under a year."""
    options = {"dataset": "csv", "data_dir": str(BIKES / "bikeshare_2011.csv"), "value_column": "riders"}
    options |= {"holidays": str(BIKES / "bikeshare_2011_holidays.txt"), "ensemble": 1}
    options |= {"train_start": "2011-01-01", "train_end": "2011-06-30", "valid_end": "2011-09-30"}
    run = make_run_dir(tmp_path / "forecast", "forecast", epochs_steps=2, config_overrides=options)
    printed = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    warned = {line.split()[1]: line for line in metrics["warnings"]}
    assert warned, (metrics["valid"]["mae_vs_naive"], metrics["test"]["mae_vs_naive"])
    for split, name in (("valid", "validation"), ("test", "test")):
        assert (name in warned) == (metrics[split]["mae_vs_naive"] >= 1), metrics[split]
    for line in warned.values():
        assert line in printed and "training windows span 181 days, less than a year" in line
