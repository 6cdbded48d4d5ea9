"""Forecast task: from the last WINDOW days of a daily series, forecast the next HORIZON days.

Trained sequence-to-sequence as in Géron's ch. 15: at every time step the network predicts the
following HORIZON days, so each window gives WINDOW training targets instead of one. The
served model (``model.keras``, the ONNX export) is the same network reading only the last
step: it takes raw values float32 ``[batch, window, 1]`` and returns raw values
``[batch, horizon]``; standardisation and its inverse live inside it. The naive seasonal
baseline (the value 7 days earlier) is scored on exactly the same windows.
Train it with ``rnnforge train forecast --dataset cta_ridership --data-dir DIR``.
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.models.spec import Int8Spec, OnnxSpec, TaskData, TaskSpec, TensorSpec
from rnnforge.pipeline import timeseries

SEASON = 7  # the naive baseline repeats the value one week earlier


def _split_series(series, config: TrainConfig) -> TaskData:
    """Windows per date split (inputs and targets inside the split, as in Géron) and info.

    ``--window`` (at least SEASON days) and ``--horizon`` (at most SEASON) are checked by their
    declarations in ``rnnforge.core.config``."""
    import pandas as pd

    window, horizon = config.window, config.horizon
    for key in ("train_start", "train_end", "valid_end"):
        try:
            pd.Timestamp(getattr(config, key))
        except (TypeError, ValueError):  # pandas' DateParseError is a ValueError
            raise UserError(
                f"--{key.replace('_', '-')} {getattr(config, key)!r} is not a date (expected YYYY-MM-DD)"
            ) from None
    if len(series) < window + horizon:
        raise UserError(f"the series has {len(series)} days, fewer than --window {window} + --horizon {horizon}")
    bounds = {
        "train": (config.train_start, config.train_end),
        "valid": (_next_day(config.train_end), config.valid_end),
        "test": (_next_day(config.valid_end), None),
    }
    splits, dates = {}, {}
    for split, (start, end) in bounds.items():
        part = series[pd.Timestamp(start) : pd.Timestamp(end) if end else None]
        x, y, starts = timeseries.windows(part, window, horizon)
        splits[split], dates[split] = (x, y), starts
    if not len(splits["train"][0]):
        raise UserError(
            f"no training windows between {config.train_start} and {config.train_end}: the series "
            f"covers {series.index.min():%Y-%m-%d}..{series.index.max():%Y-%m-%d}"
        )
    train_values = series[pd.Timestamp(config.train_start) : pd.Timestamp(config.train_end)].to_numpy()
    info = {
        "window": window,
        "horizon": horizon,
        "mean": float(train_values.mean()),
        "std": float(train_values.std()) or 1.0,
        "series": str(series.name),
        "first_day": f"{series.index.min():%Y-%m-%d}",
        "last_day": f"{series.index.max():%Y-%m-%d}",
        "units": "riders per day" if config.dataset != "csv" else str(series.name),
    }
    return TaskData(splits=splits, info=info, dates=dates)


def _next_day(day: str) -> str:
    import pandas as pd

    return f"{pd.Timestamp(day) + pd.Timedelta(days=1):%Y-%m-%d}"


def load_synthetic(config: TrainConfig) -> TaskData:
    """The embedded ridership-like series (``pipeline.timeseries.synthetic_series``)."""
    return _split_series(timeseries.synthetic_series(seed=config.data_seed), config)


def load_cta(config: TrainConfig) -> TaskData:
    """CTA daily boardings (``--data-dir`` or the portal download), ``--series`` rail/bus/total."""
    return _split_series(timeseries.load_cta(config.data_dir, config.series, config.fill_missing), config)


def load_csv(config: TrainConfig) -> TaskData:
    """Any daily series: ``--data-dir FILE --date-column NAME --value-column NAME``."""
    if not config.data_dir:
        raise UserError("--dataset csv needs --data-dir FILE (a CSV with a date and a value column)")
    series = timeseries.read_daily_csv(
        config.data_dir, config.date_column, config.value_column, fill_missing=config.fill_missing
    )
    return _split_series(series, config)


def _network(config: TrainConfig, info: dict, every_step: bool):
    """The shared layers. ``every_step``: standardised ``[batch, window, horizon]`` (training);
    otherwise raw ``[batch, horizon]`` from the last step (serving). Same layer names, so
    weights move from one to the other by name."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    mean, std = info["mean"], info["std"]
    inputs = keras.Input(shape=(info["window"], 1), name="series", dtype="float32")
    x = keras.layers.Normalization(mean=[mean], variance=[std**2], name="standardise")(inputs)
    x = recurrent_layer(config, config.units, return_sequences=True, name="rnn0")(x)
    x = recurrent_layer(config, config.units, return_sequences=every_step, name="rnn1")(x)
    x = keras.layers.Dense(info["horizon"], name="next_days")(x)
    if every_step:
        return keras.Model(inputs, x, name="forecaster_seq2seq")
    outputs = keras.layers.Rescaling(scale=std, offset=mean, name="forecast")(x)
    return keras.Model(inputs, outputs, name="forecaster")


def build_model(config: TrainConfig, info: dict):
    """The training graph: a stacked RNN that forecasts the next days at every step."""
    return _network(config, info, every_step=True)


def serving_model(trained, config: TrainConfig, info: dict):
    """The inference graph: raw ``[batch, window, 1]`` -> raw ``[batch, horizon]``, trained weights."""
    served = _network(config, info, every_step=False)
    for layer in served.layers:
        if layer.weights and layer.name != "standardise":
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return served


def train_targets(x: np.ndarray, y: np.ndarray, info: dict) -> np.ndarray:
    """Seq-to-seq targets, standardised: step t of a window targets days t+1..t+horizon."""
    horizon = info["horizon"]
    full = np.concatenate([x[..., 0], y], axis=1)  # [n, window + horizon]
    steps = np.arange(x.shape[1])[:, None] + 1 + np.arange(horizon)
    return ((full[:, steps] - info["mean"]) / info["std"]).astype(np.float32)


def naive_forecast(x: np.ndarray, horizon: int) -> np.ndarray:
    """The seasonal naive forecast: each day's value one week earlier, ``[n, horizon]``."""
    return x[:, x.shape[1] - SEASON : x.shape[1] - SEASON + horizon, 0]


def score(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, info: dict) -> dict:
    """MAE and MAPE (%) per horizon day and their mean, the naive baseline's MAE on the same
    windows, and the ratio model / naive."""
    y_true = y_true.astype(np.float64)
    errors = np.abs(y_pred.astype(np.float64) - y_true)
    naive_errors = np.abs(naive_forecast(x, y_true.shape[1]).astype(np.float64) - y_true)
    mape = errors / np.maximum(np.abs(y_true), 1.0) * 100
    out = {
        "mae": float(errors.mean()),
        "mape": float(mape.mean()),
        "naive_mae": float(naive_errors.mean()),
        "mae_vs_naive": float(errors.mean() / max(naive_errors.mean(), 1e-9)),
    }
    for day in range(y_true.shape[1]):
        out[f"mae_d+{day + 1}"] = float(errors[:, day].mean())
        out[f"mape_d+{day + 1}"] = float(mape[:, day].mean())
        out[f"naive_mae_d+{day + 1}"] = float(naive_errors[:, day].mean())
    return out


def report_plots(x, y, predictions, data: TaskData, split: str, out_dir) -> list:
    """Forecast vs actual over the split, and MAE per horizon day against the naive baseline."""
    from rnnforge.core import plots

    scores = score(x, y, predictions, data.info)
    horizon = data.info["horizon"]
    return [
        plots.forecast_vs_actual(
            data.dates[split],
            y,
            predictions,
            naive_forecast(x, horizon),
            out_dir / "forecast.png",
            split,
            data.info["units"],
        ),
        plots.mae_per_horizon(
            [scores[f"mae_d+{d}"] for d in range(1, horizon + 1)],
            [scores[f"naive_mae_d+{d}"] for d in range(1, horizon + 1)],
            out_dir / "mae_per_horizon.png",
            data.info["units"],
        ),
    ]


SPEC = TaskSpec(
    name="forecast",
    summary="Daily series forecaster: stacked LSTM/GRU trained seq-to-seq, served as window -> next days",
    kind="forecast",
    datasets={"synthetic": load_synthetic, "cta_ridership": load_cta, "csv": load_csv},
    defaults={
        "window": 56,
        "horizon": 7,
        "series": "rail",
        "date_column": "date",
        "value_column": "value",
        "fill_missing": "none",
        "train_start": "2016-01-01",
        "train_end": "2018-12-31",
        "valid_end": "2019-05-31",
        "epochs": 80,
        "batch_size": 16,  # per worker: global 32 with the default 2 workers
        "dropout": 0.3,
        "rnn": "lstm",
        "units": 32,
        "patience": 20,
    },
    build_model=build_model,
    loss="mae",  # MAE is the score; it also shrugs off holiday outliers better than MSE/Huber
    metrics=("mae",),
    onnx=OnnxSpec(
        inputs=(
            TensorSpec(
                "series",
                "float32",
                ("batch", None, 1),
                "the last WINDOW daily values, oldest first, raw units (e.g. riders per day)",
            ),
        ),
        outputs=(TensorSpec("forecast", "float32", ("batch", None), "the next HORIZON daily values, raw units"),),
        atol=1.0,  # raw units: ridership is ~1e5-1e6, float32 keeps ~7 digits
        fp16_atol=1e3,  # fp16 keeps ~3 digits inside the model; scaling to riders stays fp32
        # int8: no convolution to calibrate; the LSTMs and the dense head dynamically.
        int8=Int8Spec(dynamic_ops=("LSTM", "GRU", "MatMul", "Gemm")),
    ),
    score=score,
    report_plots=report_plots,
    demo_options={"epochs": 40},  # the synthetic series needs fewer epochs than the CTA goal run
    train_targets=train_targets,
    serving_model=serving_model,
)
