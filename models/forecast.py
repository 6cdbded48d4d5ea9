"""Forecast task: from the last WINDOW days of a daily series, forecast the next HORIZON days.

Trained sequence-to-sequence as in Géron's ch. 15: at every time step the network predicts the
following HORIZON days, so each window gives WINDOW training targets instead of one. The
served model (``model.keras``, the ONNX export) is the same network reading only the last
step: it takes raw values float32 ``series [batch, window, 1]`` and returns raw values
``forecast [batch, horizon]``; standardisation and its inverse live inside it.

With ``--covariates day_type`` (the default) it also takes the day type of every past and
forecast day, which a forecaster always knows: ``past_day_type`` int64 ``[batch, window]`` and
``future_day_type`` int64 ``[batch, horizon]``, codes indexing ``info["day_types"]`` (CTA:
``0 = W`` weekday, ``1 = A`` Saturday, ``2 = U`` Sunday or holiday). An embedding inside the
graph turns them into features: step t of the recurrent layers sees the types of days
t..t+HORIZON, and the head (a hidden ReLU layer, then one output per day) sees those of the days
it forecasts. The naive seasonal baseline (the value 7 days earlier) is scored on exactly the
same windows.

``--ensemble N`` (N > 1) puts N such networks, each with its own weights and its own loss, side by
side on the same inputs and batches; the served model averages their forecasts (same inputs and
output, no ``Loop``/``Scan``). ``--ensemble 1`` is the single network, layer for layer.
``--distil`` trains one more network beside the members on their averaged forecast and the true
targets (online distillation); it is then the served model, and the run keeps the ensemble too
(``companion_models``). ``fused_serving_model`` writes an ensemble as one network with
block-diagonal recurrent weights (``export onnx --fuse-members``: 2 recurrent nodes for any N).

Train it with ``rnnforge train forecast --dataset cta_ridership --data-dir DIR``.
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.arrays import NamedArrays
from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.models.spec import Int8Spec, OnnxSpec, TaskData, TaskSpec, TensorSpec
from rnnforge.pipeline import timeseries

SEASON = 7  # the naive baseline repeats the value one week earlier
CALENDAR_DAY_TYPES = ("W", "A", "U")  # weekday, Saturday, Sunday or holiday: the CTA's codes
DAY_TYPE_EMBEDDING = 4  # features per day type inside the graph
COVARIATE_INPUTS = ("past_day_type", "future_day_type")


def _split_series(series, config: TrainConfig, day_types=None) -> TaskData:
    """Windows per date split (inputs and targets inside the split, as in Géron) and info.

    ``day_types``: ``(codes, names)`` with int64 codes aligned with ``series`` and the list they
    index, or ``None`` (no covariates): then inputs are the series' windows ``[n, window, 1]``,
    else ``NamedArrays`` of the model's three named inputs. ``--window`` (at least SEASON days) and
    ``--horizon`` (at most SEASON) are checked by their declarations in ``rnnforge.core.config``."""
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
        where = slice(pd.Timestamp(start), pd.Timestamp(end) if end else None)
        part = series[where]
        x, y, starts = timeseries.windows(part, window, horizon)
        if day_types is not None:
            codes = pd.Series(day_types[0], index=series.index)[where].to_numpy()
            past, future = timeseries.code_windows(codes, window, horizon)
            x = NamedArrays(series=x, past_day_type=past, future_day_type=future)
        splits[split], dates[split] = (x, y), starts
    if not len(splits["train"][1]):
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
        "covariates": config.covariates,
        "ensemble": config.ensemble,
        "distil": bool(config.distil) and (config.ensemble or 1) > 1,
        "inputs": ["series", *(COVARIATE_INPUTS if day_types is not None else ())],
    }
    if config.quantiles:  # only then: a point forecaster's info is what it was
        info["quantiles"] = list(config.quantiles)
    if day_types is not None:
        info["day_types"] = list(day_types[1])
    return TaskData(splits=splits, info=info, dates=dates)


def _next_day(day: str) -> str:
    import pandas as pd

    return f"{pd.Timestamp(day) + pd.Timedelta(days=1):%Y-%m-%d}"


def load_synthetic(config: TrainConfig) -> TaskData:
    """The embedded ridership-like series (``pipeline.timeseries.synthetic_series``); its day
    types are the calendar's, its holidays those it dips on."""
    series = timeseries.synthetic_series(seed=config.data_seed)
    day_types = None
    if config.covariates == "day_type":
        codes = timeseries.calendar_day_types(series.index, timeseries.synthetic_holidays(series.index))
        day_types = (codes, CALENDAR_DAY_TYPES)
    return _split_series(series, config, day_types)


def load_cta(config: TrainConfig) -> TaskData:
    """CTA daily boardings (``--data-dir`` or the portal download), ``--series`` rail/bus/total,
    with the file's ``day_type`` (W/A/U) as covariate."""
    series = timeseries.load_cta(config.data_dir, config.series, config.fill_missing)
    day_types = None
    if config.covariates == "day_type":
        table = timeseries.cta_day_types(config.data_dir)
        day_types = _coded(table, series, CALENDAR_DAY_TYPES, timeseries.cta_csv_path(config.data_dir), "day_type")
    return _split_series(series, config, day_types)


def load_csv(config: TrainConfig) -> TaskData:
    """Any daily series: ``--data-dir FILE --date-column NAME --value-column NAME``; day types from
    ``--day-type-column`` or else the calendar plus ``--holidays``."""
    if not config.data_dir:
        raise UserError("--dataset csv needs --data-dir FILE (a CSV with a date and a value column)")
    series = timeseries.read_daily_csv(
        config.data_dir, config.date_column, config.value_column, fill_missing=config.fill_missing
    )
    holidays = timeseries.read_holidays(config.holidays) if config.holidays else set()
    day_types = None
    if config.covariates == "day_type" and config.day_type_column:
        table = timeseries.read_day_types(config.data_dir, config.date_column, config.day_type_column)
        names = _training_codes(table, config)
        day_types = _coded(table, series, names, config.data_dir, config.day_type_column)
    elif config.covariates == "day_type":
        day_types = (timeseries.calendar_day_types(series.index, holidays), CALENDAR_DAY_TYPES)
    return _split_series(series, config, day_types)


def _training_codes(table, config: TrainConfig) -> tuple[str, ...]:
    """A day-type column's codes: those of the training days, in order of first appearance."""
    import pandas as pd

    train = table[pd.Timestamp(config.train_start) : pd.Timestamp(config.train_end)]
    return tuple(dict.fromkeys(train["code"]))


def _coded(table, series, names, path, column: str) -> tuple:
    """``(codes, names)``: ``table``'s codes (``read_day_types``) on every day of ``series`` as
    indices into ``names``. Refuses, naming file and line, a code outside ``names`` (those the
    training days have) and a day of the series without one; days interpolated into the series
    (``--fill-missing interpolate``) take the calendar's weekday/Saturday/Sunday when the codes
    are the calendar's."""
    on_days = table.reindex(series.index)
    index = {name: i for i, name in enumerate(names)}
    unknown = on_days["code"].notna() & ~on_days["code"].isin(list(index))
    if unknown.any():
        row = on_days[unknown].iloc[0]
        raise UserError(
            f"{path} line {int(row['line'])}: {column} {row['code']!r} is not one of the codes of the training "
            f"days ({timeseries.first_few(names, 'codes')})"
        )
    codes = on_days["code"].map(index)
    missing = codes.isna()
    if missing.any() and tuple(names) == CALENDAR_DAY_TYPES:
        calendar = timeseries.calendar_day_types(series.index)
        codes[missing] = calendar[missing.to_numpy()]
    elif missing.any():
        raise UserError(f"{path}: {missing.idxmax():%Y-%m-%d} has a value but no {column} code")
    return codes.to_numpy(np.int64), tuple(names)


STUDENT = "student_"  # the distilled network's layer-name prefix (``--distil``)
#: ``--distil``: the student's loss is the MAE against the true targets plus this weight times the
#: MAE against the members' averaged forecast (a stop-gradient: the members do not learn from it).
DISTIL_SOFT_WEIGHT = 1.0


def members_of(info: dict) -> int:
    """The ensemble's members (1: a single network)."""
    return info.get("ensemble") or 1


def distilled(info: dict) -> bool:
    """Whether the run trains a student beside its ensemble's members (``--distil``)."""
    return bool(info.get("distil")) and members_of(info) > 1


def _network(config: TrainConfig, info: dict, every_step: bool, form: str = "served"):
    """The shared layers. ``every_step``: standardised ``[batch, window, horizon]`` (training);
    otherwise raw ``[batch, horizon]`` from the last step (serving). Same layer names, so
    weights move from one to the other by name. With ``info["ensemble"]`` N > 1 members (layer
    names ``m0_``, ``m1_``, ...) read the same inputs: training stacks their forecasts
    ``[batch, window, N * horizon]`` (``common.ensemble_output``), serving averages them.

    With ``--distil`` (``distilled(info)``) a student network (layers ``student_``) trains beside
    the members (online distillation): training appends its forecasts (against the true targets)
    and ``DISTIL_SOFT_WEIGHT`` x (its forecasts - the members' average, gradient stopped) against
    zeros, so the student learns from both and the members as before. ``form`` (serving):
    ``served`` is the student alone when distilled, else the ensemble; ``ensemble`` the members'
    average (the teacher)."""
    from tensorflow import keras

    from rnnforge.models.common import ensemble_output

    window, horizon, mean, std = info["window"], info["horizon"], info["mean"], info["std"]
    # info["columns"] > 1: further series beside the forecast one (benchmarks/experiments/forecast_defaults.py
    # tries CTA bus beside rail); column 0 is the one forecast
    series = keras.Input(shape=(window, info.get("columns", 1)), name="series", dtype="float32")
    inputs = [series]
    standardised = keras.layers.Normalization(mean=[mean], variance=[std**2], name="standardise")(series)
    days = None
    if info.get("day_types"):
        past = keras.Input(shape=(window,), name="past_day_type", dtype="int64")
        future = keras.Input(shape=(horizon,), name="future_day_type", dtype="int64")
        inputs += [past, future]
        days = keras.layers.Concatenate(axis=1, name="days")([past, future])  # [batch, window + horizon]
    members = members_of(info)
    prefixes = [f"m{i}_" for i in range(members)] if members > 1 else [""]
    student_only = not every_step and form == "served" and distilled(info)
    if student_only:
        x = _member(config, info, standardised, days, every_step, STUDENT)
    else:
        outputs = [_member(config, info, standardised, days, every_step, prefix) for prefix in prefixes]
        x = ensemble_output(outputs, average=not every_step)
        if every_step and distilled(info):
            x = _with_student(config, info, standardised, days, outputs, x)
    if every_step:
        model = keras.Model(inputs, x, name="forecaster_seq2seq")
        set_ordering_weights(model, info)
        return model
    if levels_of(info):
        return _quantile_model(inputs, x, info)
    outputs = keras.layers.Rescaling(scale=std, offset=mean, name="forecast")(x)
    return keras.Model(inputs, outputs, name="forecaster")


def _with_student(config: TrainConfig, info: dict, standardised, days, members: list, stacked):
    """The training output with the student's: ``[members..., student, w * (student - teacher)]``,
    the teacher the members' average with its gradient stopped (``train_targets``: true targets
    for the first N + 1 slots, zeros for the last)."""
    import tensorflow as tf
    from tensorflow import keras

    student = _member(config, info, standardised, days, True, STUDENT)
    teacher = tf.stop_gradient(keras.layers.Average(name="teacher_average")(members))
    gap = keras.layers.Subtract(name="student_vs_teacher")([student, teacher])
    gap = keras.layers.Rescaling(scale=DISTIL_SOFT_WEIGHT, name="distil_weight")(gap)
    return keras.layers.Concatenate(name="members_and_student")([stacked, student, gap])


def _member(config: TrainConfig, info: dict, x, days, every_step: bool, prefix: str):
    """One network on the standardised series ``x`` (and the day codes ``days``, or ``None``):
    standardised forecasts at every step or the last; its layers' names start with ``prefix``."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    window, horizon = info["window"], info["horizon"]
    if days is not None:
        kinds = keras.layers.Embedding(len(info["day_types"]), DAY_TYPE_EMBEDDING, name=f"{prefix}day_type_embedding")(
            days
        )
        # shifted[k][:, t] describes day t + k: step t sees days t..t+horizon
        shifted = [
            keras.layers.Cropping1D((k, horizon - k), name=f"{prefix}day_type_plus{k}")(kinds)
            for k in range(horizon + 1)
        ]
        x = keras.layers.Concatenate(name=f"{prefix}step_features")([x, *shifted])
        if every_step:  # at every step, the types of the days it forecasts
            ahead = keras.layers.Concatenate(name=f"{prefix}forecast_day_types")(shifted[1:])
        else:  # at the last step: the future days
            ahead = keras.layers.Flatten(name=f"{prefix}forecast_day_types")(
                keras.layers.Cropping1D((window, 0), name=f"{prefix}future_days")(kinds)
            )
    x = recurrent_layer(config, config.units, return_sequences=True, name=f"{prefix}rnn0")(x)
    x = recurrent_layer(config, config.units, return_sequences=every_step, name=f"{prefix}rnn1")(x)
    if days is not None:
        x = keras.layers.Concatenate(name=f"{prefix}head_features")([x, ahead])
        x = keras.layers.Dense(config.units, activation="relu", name=f"{prefix}head_hidden")(x)
    if not levels_of(info):
        return keras.layers.Dense(horizon, name=f"{prefix}next_days")(x)
    levels = keras.layers.Dense(horizon * len(levels_of(info)), name=f"{prefix}next_days")
    if not every_step:
        return _ordered(levels(x), prefix)
    return _ordered_for_training(levels, x, prefix)


# ---- quantile outputs (--quantiles) ----


def levels_of(info: dict) -> list[float]:
    """The quantile levels a run forecasts (``--quantiles``); empty for a point forecaster."""
    return list(info.get("quantiles") or [])


def ordering_matrices(levels) -> tuple[np.ndarray, np.ndarray]:
    """``(anchor, steps)``, each ``[Q, Q]`` (input level -> output level), such that
    ``raw @ anchor + softplus(raw) @ steps`` is ordered along the levels whatever ``raw``: every
    output starts from the median's raw value, and each level above (below) it adds (subtracts)
    the softplus of its own raw value to the one before, a positive increment."""
    q, m = len(levels), list(levels).index(0.5)
    anchor, steps = np.zeros((q, q), np.float32), np.zeros((q, q), np.float32)
    anchor[m, :] = 1.0
    for j in range(q):
        for i in range(q):
            if m < i <= j:
                steps[i, j] = 1.0
            elif j <= i < m:
                steps[i, j] = -1.0
    return anchor, steps


def _ordered(x, prefix: str):
    """A member's raw ``[..., horizon * Q]`` (day-major; member-major, then day, when fused) made
    ordered per day: two fixed Dense layers on the flat last axis whose kernels are
    ``ordering_matrices`` once per day. Flat, not
    ``[..., horizon, Q]``: a Dense on a rank-3 tensor exports as Tensordot, whose shape arithmetic
    ONNX Runtime runs on the CPU even in a CUDA session."""
    from tensorflow import keras

    width = x.shape[-1]  # horizon * Q, or members * horizon * Q in a fused ensemble
    gaps = keras.layers.Activation("softplus", name=f"{prefix}quantile_gaps")(x)
    fixed = {"use_bias": False, "trainable": False, "kernel_initializer": "zeros"}
    anchor = keras.layers.Dense(width, name=f"{prefix}quantile_anchor", **fixed)(x)
    steps = keras.layers.Dense(width, name=f"{prefix}quantile_steps", **fixed)(gaps)
    return keras.layers.Add(name=f"{prefix}quantile_levels")([anchor, steps])


def _ordered_for_training(levels, x, prefix: str):
    """``_ordered(levels(x))``, the same values, with gradients that keep the median a point
    forecaster: the median's error trains the whole network (``x``'s layers and its own output
    weights), each other level's error only that level's output weights, which see ``x`` and the
    median with their gradients stopped. So ``--quantiles`` adds intervals around the forecast
    the point model would make rather than trading some of its accuracy for them (the pinball
    loss on a shared network made the median a worse point forecast; docs/forecasting.md)."""
    import tensorflow as tf
    from tensorflow import keras

    raw = levels(x)
    frozen = levels(tf.stop_gradient(x))  # the same layer: the same raw values
    width = raw.shape[-1]
    fixed = {"use_bias": False, "trainable": False, "kernel_initializer": "zeros"}
    gaps = keras.layers.Activation("softplus", name=f"{prefix}quantile_gaps")(frozen)
    median = keras.layers.Dense(width, name=f"{prefix}quantile_anchor_median", **fixed)(raw)
    others = keras.layers.Dense(width, name=f"{prefix}quantile_anchor_others", **fixed)(tf.stop_gradient(raw))
    steps = keras.layers.Dense(width, name=f"{prefix}quantile_steps", **fixed)(gaps)
    return keras.layers.Add(name=f"{prefix}quantile_levels")([median, others, steps])


#: Layers whose weights the builder sets (``set_ordering_weights``), never copied from a trained
#: model; the two ``anchor_`` halves of ``quantile_anchor`` are in training graphs only.
ORDERING_LAYERS = ("quantile_anchor", "quantile_steps", "quantile_anchor_median", "quantile_anchor_others")


def _ordering_kernels(levels) -> dict:
    """``ORDERING_LAYERS``' ``[Q, Q]`` kernels: ``ordering_matrices``, and the anchor split into the
    median's own output column and the others'."""
    anchor, steps = ordering_matrices(levels)
    own = np.zeros_like(anchor)
    m = list(levels).index(0.5)
    own[:, m] = anchor[:, m]
    return dict(zip(ORDERING_LAYERS, (anchor, steps, own, anchor - own)))


def set_ordering_weights(model, info: dict) -> None:
    """The fixed weights of every ``ORDERING_LAYERS`` layer of ``model``: its kernel once per day
    (per member and day in a fused ensemble's wider layers)."""
    if not levels_of(info):
        return
    matrices = _ordering_kernels(levels_of(info))
    for layer in model.layers:
        for name, matrix in matrices.items():
            if layer.name.endswith(name):
                days = np.eye(layer.weights[0].shape[0] // len(matrix), dtype=np.float32)
                layer.set_weights([np.kron(days, matrix)])


def calibration_kernel(scales, levels) -> np.ndarray:
    """The ``calibration`` layer's ``[H * Q, H * Q]`` kernel: level j of day d becomes
    ``median + scales[d] * (level_j - median)`` (a scale > 0 keeps the levels ordered); all ones:
    the identity."""
    q, m = len(levels), list(levels).index(0.5)
    kernel = np.zeros((len(scales) * q, len(scales) * q), np.float32)
    for d, scale in enumerate(scales):
        for j in range(q):
            kernel[d * q + j, d * q + j] += scale
            kernel[d * q + m, d * q + j] += 1.0 - scale
    return kernel


def _quantile_model(inputs, x, info: dict, name: str = "forecaster"):
    """Serving outputs of a quantile forecaster from the averaged standardised ``[batch, H * Q]``:
    ``forecast`` (the median, ``[batch, H]``) and ``quantiles`` (``[batch, H, Q]``), raw units, the
    intervals scaled per day by ``info["interval_scale"]`` (identity when absent)."""
    from tensorflow import keras

    horizon, levels = info["horizon"], levels_of(info)
    q, m = len(levels), levels.index(0.5)
    fixed = {"use_bias": False, "trainable": False, "kernel_initializer": "zeros"}
    x = keras.layers.Dense(horizon * q, name="calibration", **fixed)(x)
    x = keras.layers.Rescaling(scale=info["std"], offset=info["mean"], name="quantiles_raw_units")(x)
    quantiles = keras.layers.Reshape((horizon, q), name="quantiles")(x)
    by_level = keras.layers.Permute((2, 1), name="levels_first")(quantiles)
    median = keras.layers.Cropping1D((m, q - m - 1), name="median_level")(by_level)
    forecast = keras.layers.Reshape((horizon,), name="forecast")(median)
    model = keras.Model(inputs, [forecast, quantiles], name=name)
    set_ordering_weights(model, info)
    scales = info.get("interval_scale") or [1.0] * horizon
    model.get_layer("calibration").set_weights([calibration_kernel(scales, levels)])
    return model


def pinball_loss(levels, weights=None):
    """The Keras loss of outputs whose last axis holds these quantile ``levels`` (one per column):
    the mean over columns of ``weights`` (default 1) x the pinball loss ``max(tau * e, (tau - 1) * e)``,
    ``e = y - prediction`` (at tau 0.5, half the absolute error)."""
    import tensorflow as tf

    taus = tf.constant(np.asarray(levels, np.float32))
    scale = tf.constant(np.ones(len(levels), np.float32) if weights is None else np.asarray(weights, np.float32))

    def pinball(y_true, y_pred):
        error = tf.cast(y_true, y_pred.dtype) - y_pred
        tau, weight = tf.cast(taus, y_pred.dtype), tf.cast(scale, y_pred.dtype)
        return tf.reduce_mean(weight * tf.maximum(tau * error, (tau - 1.0) * error), axis=-1)

    return pinball


def training_loss(config: TrainConfig, info: dict):
    """A quantile forecaster's loss (``pinball_loss``) over the training graph's columns: each
    member's (and the student's) ``horizon x Q`` levels, and, distilled, the student's gap to the
    teacher at tau 0.5; ``None``: the spec's MAE. Weighted so that the loss is the medians' MAE
    (with the gap's, as a point forecaster's ``--distil``) plus the mean pinball loss of the other
    levels: the median trains as a point forecaster's output does (``_ordered_for_training``)."""
    levels = levels_of(info)
    if not levels:
        return None
    q = len(levels)
    per_network = np.tile(levels, info["horizon"])
    weight = np.where(per_network == 0.5, 2.0 * q, q / (q - 1) if q > 1 else 0.0)
    networks = members_of(info) + (1 if distilled(info) else 0)
    taus, weights = np.tile(per_network, networks), np.tile(weight, networks)
    if distilled(info):  # every level's gap at tau 0.5: a day's Q gaps weigh as its median's error
        taus = np.concatenate([taus, np.full(per_network.size, 0.5)])
        weights = np.concatenate([weights, np.full(per_network.size, 2.0)])
    return pinball_loss(taus, weights)


def build_model(config: TrainConfig, info: dict):
    """The training graph: a stacked RNN that forecasts the next days at every step."""
    return _network(config, info, every_step=True)


def serving_model(trained, config: TrainConfig, info: dict, form: str = "served"):
    """The inference graph: raw inputs -> raw ``[batch, horizon]``, trained weights. ``form``:
    ``served`` (the student when distilled, else the ensemble) or ``ensemble`` (the members' average)."""
    served = _network(config, info, every_step=False, form=form)
    fixed = ("standardise", "calibration")  # set from info by the builder, not trained
    for layer in served.layers:
        if layer.weights and layer.name not in fixed and not layer.name.endswith(ORDERING_LAYERS):
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return served


def companion_models(trained, config: TrainConfig, info: dict) -> dict:
    """Models a run keeps beside the served one: a distilled run keeps its ensemble (the teacher),
    saved as ``model.ensemble.keras`` and exported as ``model.ensemble.onnx``."""
    return {"ensemble": serving_model(trained, config, info, form="ensemble")} if distilled(info) else {}


def fused_serving_model(ensemble, config: TrainConfig, info: dict):
    """The served ensemble ``ensemble`` (layers ``m0_``, ``m1_``, ...) as one network computing the
    same average: one embedding of N x 4 features, each recurrent layer one LSTM/GRU of N x units
    whose weights are block-diagonal (member i's units see only member i's inputs and state; the
    series column is shared), one hidden head layer of N x units, and one output layer holding the
    members' output weights over N (the average). An ONNX export then has 2 recurrent nodes for
    any number of members: one kernel per layer on a GPU instead of one per member, for N times the
    arithmetic of a member in each (most of it zeros). ``None`` when ``ensemble`` is one network
    (a single one, or a distilled run's student)."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    if members_of(info) < 2 or "m0_rnn0" not in {layer.name for layer in ensemble.layers}:
        return None
    members, units = members_of(info), config.units
    window, horizon, mean, std = info["window"], info["horizon"], info["mean"], info["std"]
    columns, width = info.get("columns", 1), DAY_TYPE_EMBEDDING * members
    series = keras.Input(shape=(window, columns), name="series", dtype="float32")
    inputs = [series]
    x = keras.layers.Normalization(mean=[mean], variance=[std**2], name="standardise")(series)
    if info.get("day_types"):
        past = keras.Input(shape=(window,), name="past_day_type", dtype="int64")
        future = keras.Input(shape=(horizon,), name="future_day_type", dtype="int64")
        inputs += [past, future]
        days = keras.layers.Concatenate(axis=1, name="days")([past, future])
        kinds = keras.layers.Embedding(len(info["day_types"]), width, name="fused_day_type_embedding")(days)
        shifted = [
            keras.layers.Cropping1D((k, horizon - k), name=f"fused_day_type_plus{k}")(kinds) for k in range(horizon + 1)
        ]
        x = keras.layers.Concatenate(name="fused_step_features")([x, *shifted])
        ahead = keras.layers.Flatten(name="fused_forecast_day_types")(
            keras.layers.Cropping1D((window, 0), name="fused_future_days")(kinds)
        )
    x = recurrent_layer(config, members * units, return_sequences=True, name="fused_rnn0")(x)
    x = recurrent_layer(config, members * units, return_sequences=False, name="fused_rnn1")(x)
    if info.get("day_types"):
        x = keras.layers.Concatenate(name="fused_head_features")([x, ahead])
        x = keras.layers.Dense(members * units, activation="relu", name="fused_head_hidden")(x)
    if levels_of(info):  # each member's levels ordered on its own, then averaged by a fixed layer
        width = horizon * len(levels_of(info))
        x = _ordered(keras.layers.Dense(members * width, name="fused_next_days")(x), "fused_")
        fixed = {"use_bias": False, "trainable": False, "kernel_initializer": "zeros"}
        x = keras.layers.Dense(width, name="fused_member_average", **fixed)(x)
        fused = _quantile_model(inputs, x, info, name="forecaster_fused")
        fused.get_layer("fused_member_average").set_weights([np.kron(np.ones((members, 1)) / members, np.eye(width))])
    else:
        x = keras.layers.Dense(horizon, name="fused_next_days")(x)
        fused = keras.Model(
            inputs, keras.layers.Rescaling(scale=std, offset=mean, name="forecast")(x), name="forecaster_fused"
        )
    _fuse_weights(fused, ensemble, info, members, units, columns)
    return fused


def _fuse_weights(fused, ensemble, info: dict, members: int, units: int, columns: int) -> None:
    """Member i's weights into the fused layers: its units at ``i * units`` of every gate, its
    embedding features at ``i * 4`` of every day's, the shared series column(s) first."""
    n, e, horizon = members, DAY_TYPE_EMBEDDING, info["horizon"]
    days = bool(info.get("day_types"))

    def member(i: int, name: str) -> list:
        return ensemble.get_layer(f"m{i}_{name}").get_weights()

    def unit_columns(i: int, size: int) -> np.ndarray:  # member i's columns of a [.., gates * units] weight
        gates = size // units
        return (np.arange(gates)[:, None] * n * units + i * units + np.arange(units)).ravel()

    def day_rows(i: int, start_fused: int, days_count: int) -> np.ndarray:
        """Where member i's ``days_count`` days of 4 features (day-major) go in the fused input,
        from ``start_fused`` on (day-major, then member)."""
        k, j = np.meshgrid(np.arange(days_count), np.arange(e), indexing="ij")
        return (start_fused + k * n * e + i * e + j).ravel()

    def scatter(layer_name: str, input_rows) -> None:
        """Layer ``layer_name``'s weights (kernel, [recurrent kernel,] bias) of every member into
        the fused layer: member i's kernel rows at ``input_rows(i)``, its recurrent rows and every
        output column at its own units."""
        layer = fused.get_layer(f"fused_{layer_name}")
        new = [np.zeros_like(w) for w in layer.get_weights()]
        for i in range(n):
            *kernels, bias = member(i, layer_name)
            rows = [input_rows(i), own(i)][: len(kernels)]
            for target, source, where in zip(new, kernels, rows):
                target[np.ix_(where, unit_columns(i, source.shape[-1]))] = source
            new[-1][..., unit_columns(i, bias.shape[-1])] = bias  # a GRU has two rows of biases
        layer.set_weights(new)

    def own(i: int) -> np.ndarray:  # member i's units among all members'
        return i * units + np.arange(units)

    if days:
        tables = [member(i, "day_type_embedding")[0] for i in range(n)]
        fused.get_layer("fused_day_type_embedding").set_weights([np.concatenate(tables, axis=1)])
        scatter("rnn0", lambda i: np.concatenate([np.arange(columns), day_rows(i, columns, horizon + 1)]))
        scatter("rnn1", own)
        scatter("head_hidden", lambda i: np.concatenate([own(i), day_rows(i, n * units, horizon)]))
    else:
        scatter("rnn0", lambda i: np.arange(columns))
        scatter("rnn1", own)
    kernels, biases = zip(*(member(i, "next_days") for i in range(n)))
    if levels_of(info):  # block-diagonal: member i's levels at i * horizon * Q, averaged after ordering
        width = kernels[0].shape[1]
        kernel = np.zeros((n * units, n * width), np.float32)
        for i, member_kernel in enumerate(kernels):
            kernel[np.ix_(own(i), i * width + np.arange(width))] = member_kernel
        fused.get_layer("fused_next_days").set_weights([kernel, np.concatenate(biases)])
    else:  # the average is linear here: one output layer holding the members' weights over N
        fused.get_layer("fused_next_days").set_weights([np.concatenate(kernels) / n, np.mean(biases, axis=0)])


def series_of(x) -> np.ndarray:
    """The ``series`` input ``[n, window, 1]`` of ``x`` (the array itself, or its ``series`` entry)."""
    return x["series"] if isinstance(x, dict) else x


def train_targets(x, y: np.ndarray, info: dict) -> np.ndarray:
    """Seq-to-seq targets, standardised: step t of a window targets days t+1..t+horizon
    ``[n, window, horizon]``, repeated once per member of an ensemble (``[n, window, N * horizon]``)."""
    from rnnforge.models.common import tile_targets

    horizon, values = info["horizon"], series_of(x)
    full = np.concatenate([values[..., 0], y], axis=1)  # [n, window + horizon]
    steps = np.arange(values.shape[1])[:, None] + 1 + np.arange(horizon)
    targets = ((full[:, steps] - info["mean"]) / info["std"]).astype(np.float32)
    if levels_of(info):  # every level of a day targets that day: [n, window, horizon * Q], day-major
        targets = np.repeat(targets, len(levels_of(info)), axis=-1)
    if distilled(info):  # the members' and the student's true targets, then zeros for the gap to the teacher
        return np.concatenate([tile_targets(targets, members_of(info) + 1), np.zeros_like(targets)], axis=-1)
    return tile_targets(targets, members_of(info))


def naive_forecast(x, horizon: int) -> np.ndarray:
    """The seasonal naive forecast: each day's value one week earlier, ``[n, horizon]``."""
    values = series_of(x)
    return values[:, values.shape[1] - SEASON : values.shape[1] - SEASON + horizon, 0]


#: Training days below this leave part of the year's cycle (ridership's, bike counts') unseen.
YEAR_DAYS = 365


def training_days(data: TaskData) -> int:
    """Days the training windows span, from the first input day to the last target day."""
    starts = data.dates["train"]
    window, horizon = data.info["window"], data.info["horizon"]
    return int((starts[-1] - starts[0]).astype(int)) + window + horizon


def naive_warning(ratio: float, split: str, windows: int, train_days: int) -> str | None:
    """One line when the forecast's MAE on ``windows`` windows of ``split`` is not below the seasonal
    naive forecast's (``ratio`` >= 1: worse than repeating last week). Under a year of training
    days, the likely cause is a season the model never saw (a year's second half forecast from its
    first: docs/forecasting.md, the bike counts)."""
    if ratio < 1:
        return None
    line = (
        f"warning: {split} MAE is {ratio:.2f}x the naive forecast's (each day's value a week earlier; "
        f"{windows} windows): the model forecasts worse than repeating last week"
    )
    if train_days < YEAR_DAYS:
        return line + (
            f"; its training windows span {train_days} days, less than a year, so the seasons after them "
            "are new to it: train on a year or more (--train-start, --train-end)"
        )
    return line + "; check that the training days are like the forecast days (--train-start, --train-end)"


def point_and_quantiles(y_pred) -> tuple[np.ndarray, np.ndarray | None]:
    """A served model's predictions as ``(forecast [n, H], quantiles [n, H, Q] or None)``: a quantile
    forecaster returns both (Keras: a list), a point forecaster the forecast alone."""
    if isinstance(y_pred, dict):
        return np.asarray(y_pred["forecast"]), np.asarray(y_pred["quantiles"])
    if isinstance(y_pred, (list, tuple)):
        return np.asarray(y_pred[0]), np.asarray(y_pred[1]) if len(y_pred) > 1 else None
    return np.asarray(y_pred), None


def level_name(level: float) -> str:
    """``0.1`` -> ``p10``, ``0.05`` -> ``p5``, ``0.975`` -> ``p97.5``."""
    return f"p{level * 100:g}"


def central_pairs(levels) -> list[tuple[int, int]]:
    """Indices ``(low, high)`` of the central intervals among ``levels``: each level below 0.5 with
    its mirror ``1 - level`` when that is a level too, widest first."""
    levels = [round(v, 6) for v in levels]
    return [(i, levels.index(round(1 - v, 6))) for i, v in enumerate(levels) if v < 0.5 and round(1 - v, 6) in levels]


def pinball(y_true: np.ndarray, predicted: np.ndarray, level: float) -> np.ndarray:
    """The pinball (quantile) loss of ``predicted`` as the ``level`` quantile of ``y_true``, per value."""
    error = np.asarray(y_true, np.float64) - np.asarray(predicted, np.float64)
    return np.maximum(level * error, (level - 1.0) * error)


def coverage(y_true: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per horizon day, the share of windows whose true value lies in ``[low, high]`` (``[n, H]`` each)."""
    return np.mean((y_true >= low) & (y_true <= high), axis=0)


def quantile_scores(y_true: np.ndarray, quantiles: np.ndarray, levels) -> dict:
    """Pinball loss per level (raw units) and its mean; for each central interval (e.g. P10-P90),
    its empirical coverage over all days and per horizon day, and its mean width."""
    y_true = np.asarray(y_true, np.float64)
    out = {}
    for j, level in enumerate(levels):
        out[f"pinball_{level_name(level)}"] = float(pinball(y_true, quantiles[..., j], level).mean())
    out["pinball_mean"] = float(np.mean([out[f"pinball_{level_name(v)}"] for v in levels]))
    for low, high in central_pairs(levels):
        name = f"{level_name(levels[low])}_{level_name(levels[high])}"
        covered = coverage(y_true, quantiles[..., low], quantiles[..., high])
        width = quantiles[..., high].astype(np.float64) - quantiles[..., low]
        out[f"coverage_{name}"] = float(covered.mean())
        out[f"nominal_{name}"] = round(float(levels[high] - levels[low]), 6)
        out[f"width_{name}"] = float(width.mean())
        for day in range(y_true.shape[1]):
            out[f"coverage_{name}_d+{day + 1}"] = float(covered[day])
            out[f"width_{name}_d+{day + 1}"] = float(width[:, day].mean())
    return out


def interval_scales(y_true: np.ndarray, quantiles: np.ndarray, levels) -> list[float]:
    """Conformal scales of the intervals, one per horizon day (``calibration_kernel``): for the
    widest central interval (e.g. P10-P90, nominal 80 %), each window's score is how far out its
    true value lies, as a multiple of the interval's half on that side of the median; the scale is
    the ceil((n + 1) x nominal)-th smallest score (split conformal), so that every level's distance
    to the median, times it, covers the nominal share of these windows."""
    low, high = central_pairs(levels)[0]
    m, nominal = list(levels).index(0.5), levels[high] - levels[low]
    y = np.asarray(y_true, np.float64)
    median = quantiles[..., m].astype(np.float64)
    below = (median - y) / np.maximum(median - quantiles[..., low], 1e-9)
    above = (y - median) / np.maximum(quantiles[..., high] - median, 1e-9)
    scores = np.sort(np.maximum(below, above), axis=0)  # [n, H]
    n = len(scores)
    rank = min(n, int(np.ceil((n + 1) * nominal))) - 1
    # a hair above the boundary window's score: float32 arithmetic in the graph keeps it inside
    return [float(max(scores[rank, day] * (1 + 1e-5), 1e-3)) for day in range(scores.shape[1])]


def crossfit_coverage(y_true: np.ndarray, quantiles: np.ndarray, levels) -> np.ndarray:
    """Per horizon day, the widest central interval's coverage after conformal scaling
    (``interval_scales``) where no window is scored by scales fitted on it: the earlier half of
    the windows is scaled by the later half's scales and the other way round."""
    low, high = central_pairs(levels)[0]
    half = len(y_true) // 2
    parts = (slice(0, half), slice(half, None))
    covered = []
    for fit_on, score_on in (parts, parts[::-1]):
        scales = interval_scales(y_true[fit_on], quantiles[fit_on], levels)
        q = quantiles[score_on].reshape(len(y_true[score_on]), -1) @ calibration_kernel(scales, levels)
        q = q.reshape(quantiles[score_on].shape)
        covered.append((y_true[score_on] >= q[..., low]) & (y_true[score_on] <= q[..., high]))
    return np.concatenate(covered).mean(axis=0)


def calibrate(served, config: TrainConfig, data: TaskData) -> dict | None:
    """``--conformal``: the served quantile model's intervals scaled per horizon day
    (``interval_scales`` on the validation windows, into its ``calibration`` layer and
    ``info["interval_scale"]``); the record for metrics.json. ``None`` without it."""
    levels = levels_of(data.info)
    x, y = data.splits["valid"]
    if config.conformal is False or not (levels and central_pairs(levels) and len(y)):
        return None
    _, quantiles = point_and_quantiles(served.predict(x, batch_size=256, verbose=0))
    scales = interval_scales(y, quantiles, levels)
    served.get_layer("calibration").set_weights([calibration_kernel(scales, levels)])
    data.info["interval_scale"] = scales
    low, high = central_pairs(levels)[0]
    return {
        "method": "split conformal: one scale per horizon day of every level's distance to the median",
        "fitted_on": "valid",
        "windows": int(len(y)),
        "interval": f"{level_name(levels[low])}-{level_name(levels[high])}",
        "scales": scales,
        "coverage_before": coverage(y, quantiles[..., low], quantiles[..., high]).tolist(),
        "note": "the valid scores are in-sample for these scales; *_crossfit scores none with its own",
    }


def score(x, y_true: np.ndarray, y_pred, info: dict) -> dict:
    """MAE and MAPE (%) per horizon day and their mean, the naive baseline's MAE on the same
    windows, and the ratio model / naive; a quantile forecaster's ``quantile_scores`` too (its point
    forecast is the median)."""
    y_pred, quantiles = point_and_quantiles(y_pred)
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
    if quantiles is not None and levels_of(info):
        levels = levels_of(info)
        out.update(quantile_scores(y_true, quantiles, levels))
        if central_pairs(levels) and len(y_true) >= 20:  # what conformal scaling would give, honestly
            low, high = central_pairs(levels)[0]
            crossfit = crossfit_coverage(y_true, quantiles, levels)
            name = f"coverage_{level_name(levels[low])}_{level_name(levels[high])}_crossfit"
            out[name] = float(crossfit.mean())
            out.update({f"{name}_d+{day + 1}": float(c) for day, c in enumerate(crossfit)})
    return out


def weekday_holidays(x, starts, info: dict) -> np.ndarray:
    """The forecast days (datetime64) on a Monday..Friday whose day type is the Sunday/holiday one
    (``U``, the last of the calendar's codes): what the covariates tell the model and the naive
    forecast cannot know. Empty without covariates."""
    if not isinstance(x, dict) or info.get("day_types") is None or "U" not in info["day_types"]:
        return np.array([], dtype="datetime64[D]")
    days = np.asarray(starts, dtype="datetime64[D]")[:, None] + np.arange(x["future_day_type"].shape[1])
    holiday = (x["future_day_type"] == info["day_types"].index("U")) & (((days.astype(np.int64) + 3) % 7) < 5)
    return np.unique(days[holiday])


def report_plots(x, y, predictions, data: TaskData, split: str, out_dir) -> list:
    """Forecast vs actual over the split, and MAE per horizon day against the naive baseline."""
    from rnnforge.core import plots

    scores = score(x, y, predictions, data.info)
    horizon = data.info["horizon"]
    point, quantiles = point_and_quantiles(predictions)
    interval, pairs = None, central_pairs(levels_of(data.info))
    if quantiles is not None and pairs:  # the widest central interval, shaded
        low, high = pairs[0]
        levels = levels_of(data.info)
        label = f"{level_name(levels[low]).upper()}-{level_name(levels[high]).upper()}"
        interval = (quantiles[..., low], quantiles[..., high], label)
    return [
        plots.forecast_vs_actual(
            data.dates[split],
            y,
            point,
            naive_forecast(x, horizon),
            out_dir / "forecast.png",
            split,
            data.info["units"],
            holidays=weekday_holidays(x, data.dates[split], data.info),
            interval=interval,
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
        # Chosen on CTA rail, bus and total and the synthetic series, several seeds each
        # (docs/forecasting.md): no dropout and 64 units hold across series; dropout 0.3 did not.
        "dropout": 0.0,
        "rnn": "lstm",
        "units": 64,
        "patience": 20,
        "covariates": "day_type",
        # The average of five networks: a seed moves its error far less than one network's, for
        # several times the training time and ORT latency (figures in docs/forecasting.md,
        # "Averaged ensemble"). --ensemble 1: one network.
        "ensemble": 5,
        "distil": False,
        "quantiles": None,  # a point forecast unless asked (docs/forecasting.md, "Quantile forecasts")
        # None: on with --quantiles (the pinball-trained intervals cover too little out of sample)
        "conformal": None,
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
            TensorSpec(
                "past_day_type",
                "int64",
                ("batch", None),
                "the day type of each of those WINDOW days, a code indexing rnnforge.day_types (CTA: 0 W, 1 A, 2 U)",
                codes="day_types",
            ),
            TensorSpec(
                "future_day_type",
                "int64",
                ("batch", None),
                "the day type of each of the HORIZON days forecast, codes as past_day_type",
                codes="day_types",
            ),
        ),
        outputs=(
            TensorSpec(
                "forecast",
                "float32",
                ("batch", None),
                "the next HORIZON daily values, raw units (with --quantiles: the median, level 0.5)",
            ),
            TensorSpec(
                "quantiles",
                "float32",
                ("batch", None, None),
                "with --quantiles: each level of rnnforge.quantiles (increasing) for each of the HORIZON days, "
                "raw units, [batch, HORIZON, Q]",
                requires="quantiles",
            ),
        ),
        atol=1.0,  # raw units: ridership is ~1e5-1e6, float32 keeps ~7 digits
        fp16_atol=1e3,  # fp16 keeps ~3 digits inside the model; scaling to riders stays fp32
        # int8: no convolution to calibrate; the LSTMs and the dense head dynamically.
        int8=Int8Spec(dynamic_ops=("LSTM", "GRU", "MatMul", "Gemm")),
    ),
    score=score,
    report_plots=report_plots,
    # the synthetic series needs fewer epochs than the CTA goal run; the demo shows the intervals too
    demo_options={"epochs": 40, "quantiles": "0.1,0.5,0.9"},
    train_targets=train_targets,
    training_loss=training_loss,
    serving_model=serving_model,
    calibrate=calibrate,
    companion_models=companion_models,
    fused_model=fused_serving_model,
)
