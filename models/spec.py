"""Task specs: one declaration per model, read by train, export, bench and demo alike.

A ``TaskSpec`` names the task's datasets, its hyper-parameter defaults, how to build the Keras
model, how to score predictions, and the ONNX half (inputs and outputs with named dynamic axes,
opset, parity tolerance) in the style of optimum's ``OnnxConfig``. Nothing here imports
TensorFlow; builders import it when they are called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnforge.core.config import TrainConfig


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX input or output: name, dtype, axes and units.

    An axis is a name (dynamic, e.g. ``"batch"``), an int (fixed size) or ``None`` (fixed by
    the data, e.g. the number of classes).
    """

    name: str
    dtype: str
    axes: tuple[str | int | None, ...]
    description: str
    # An integer input of category codes: the data info key listing them (code i = info[key][i]);
    # the eval set records the list and bench refuses codes outside it.
    codes: str = ""
    # An output that only some runs have: the data info key that must be set (the forecaster's
    # ``quantiles`` output exists with ``--quantiles``).
    requires: str = ""

    def dynamic_axes(self) -> dict[int, str]:
        """Map axis index to its symbolic name, for the axes that are dynamic."""
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str)}


@dataclass(frozen=True)
class Int8Spec:
    """How a task's int8 variant (``export onnx --int8``) is quantized, and its accuracy gate.

    ``static_ops``: op types quantized statically (QDQ, activation ranges from calibration inputs);
    ``dynamic_ops``: op types quantized dynamically (int8 weights, activation scale per call). The
    ``fp32_layers``: the layers left in fp32 among those the recipe quantizes, by position:
    ``"first"`` (the first Conv, MatMul, Gemm, LSTM or GRU of the graph), ``"last"`` (the last);
    ``calibration``: how the static ops' activation ranges are set from the calibration inputs
    (``"minmax"``, ``"percentile"``: ``calibration_percentile`` of each tensor's absolute values,
    or ``"entropy"``); ``calibration_bytes``: at most this many bytes of calibration inputs. The
    gate, on held-out examples: a classifier's top-1 agreement with TensorFlow (its 95 % lower
    bound) and its accuracy drop (a fraction: 0.005 is half a point); a forecaster's mean MAE
    against the fp32 ONNX model's (relative increase).
    """

    static_ops: tuple[str, ...] = ()
    dynamic_ops: tuple[str, ...] = ("LSTM", "GRU", "MatMul", "Gemm")
    fp32_layers: tuple[str, ...] = ()
    calibration: str = "minmax"
    calibration_percentile: float = 99.999
    calibration_bytes: int = 16 * 2**20
    min_top1_agreement: float = 0.99
    max_accuracy_drop: float = 0.005
    max_mae_increase: float = 0.02


@dataclass(frozen=True)
class OnnxSpec:
    """How a task's model is exported and validated."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int = 17
    atol: float = 1e-4
    fp16_atol: float = 1e-2  # the fp16 variant's parity tolerance (half precision keeps ~3 digits)
    int8: Int8Spec = Int8Spec()  # the int8 variant's recipe and accuracy gate

    def inputs_for(self, info: dict) -> tuple[TensorSpec, ...]:
        """The inputs a trained model takes: those named in its data ``info["inputs"]`` (a task
        whose inputs depend on its options, e.g. the forecaster's covariates), else all."""
        names = info.get("inputs")
        return self.inputs if names is None else tuple(t for t in self.inputs if t.name in names)

    def outputs_for(self, info: dict) -> tuple[TensorSpec, ...]:
        """The outputs a trained model returns: those its data ``info`` does not leave out
        (``TensorSpec.requires``)."""
        return tuple(t for t in self.outputs if not t.requires or info.get(t.requires))


@dataclass
class TaskData:
    """A task's data: ``splits[name] = (x, y)`` numpy arrays (or a streamed training split) plus info.

    ``info`` holds what the model and the reports need (e.g. ``class_names``), and is saved in
    ``config.json`` so that export and bench can rebuild everything from the run dir.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any] = field(default_factory=dict)
    dates: dict[str, np.ndarray] = field(default_factory=dict)  # per split, for time series
    # A training split too large for memory streams instead: ``train_stream(input_context,
    # batch_size, seed)`` returns one worker's endless batches, and ``train_size`` counts them.
    train_stream: Callable[[Any, int, int], Any] | None = None
    train_size: int | None = None
    # A generated dataset can draw more of its evaluation split's kind: ``draw_held_out(n, index)``
    # returns the ``index``-th batch of ``n`` fresh examples (x, y), never a training example; export
    # judges its agreement gates on them where the held-out splits are too small to establish them.
    draw_held_out: Callable[[int, int], tuple[Any, np.ndarray]] | None = None

    def num_examples(self, split: str) -> int:
        if split == "train" and self.train_stream is not None:
            return int(self.train_size)
        return int(len(self.splits[split][1]))  # y: x may be a dict of named inputs

    def evaluation_split(self) -> str:
        """``test``, or ``valid`` when the test split is empty (e.g. a series that ends early)."""
        return "test" if self.num_examples("test") else "valid"


@dataclass(frozen=True)
class TaskSpec:
    """Everything rnnforge knows about one task. ``name`` is the CLI's task argument."""

    name: str
    summary: str
    kind: str  # "classification" (scores: accuracy) or "forecast" (scores: MAE)
    datasets: Mapping[str, Callable[[TrainConfig], TaskData]]  # dataset name -> loader(config)
    # This task's values of TrainConfig's options (rnnforge.core.config declares them with their
    # common defaults); CLI options override them.
    defaults: Mapping[str, Any]
    build_model: Callable[[TrainConfig, dict], Any]  # (config, data info) -> keras.Model to train
    loss: str
    metrics: tuple[str, ...]
    onnx: OnnxSpec
    score: Callable[[np.ndarray, np.ndarray, np.ndarray, dict], dict]  # (x, y_true, y_pred, info) -> scalars
    report_plots: Callable[..., list] = lambda *args, **kwargs: []  # (x, y, pred, data, split, out_dir) -> PNGs
    # The training graph may differ from the serving graph (e.g. seq-to-seq targets): these map
    # the serving-form data to training targets, and the trained model to the one that is served.
    demo_options: Mapping[str, Any] = field(default_factory=dict)  # what ``rnnforge demo`` changes
    train_targets: Callable[[np.ndarray, np.ndarray, dict], np.ndarray] | None = None
    # A loss that depends on the run's options (the forecaster's pinball loss with --quantiles):
    # (config, info) -> a Keras loss, or None for ``loss``.
    training_loss: Callable[[TrainConfig, dict], Any] | None = None
    serving_model: Callable[[Any, TrainConfig, dict], Any] | None = None  # (trained model, config, info)
    # Served models a run keeps beside ``model.keras`` (the forecaster's distilled run keeps its
    # ensemble): (trained model, config, info) -> {name: model}, saved as ``model.NAME.keras``,
    # scored in metrics.json under NAME and exported as ``model.NAME.onnx``.
    companion_models: Callable[[Any, TrainConfig, dict], dict] | None = None
    # After training, before scoring: adjust the served model on the validation split (the
    # forecaster's --conformal interval scales); (served model, config, data) -> a record for
    # metrics.json's ``calibration``, or None when nothing was done.
    calibrate: Callable[[Any, TrainConfig, TaskData], dict | None] | None = None
    # ``export onnx --fuse-members``: (served ensemble, config, info) -> the same function as one
    # network whose recurrent layers hold every member (block-diagonal weights), or None.
    fused_model: Callable[[Any, TrainConfig, dict], Any] | None = None

    @property
    def default_dataset(self) -> str:
        return next(iter(self.datasets))

    def load_data(self, config: TrainConfig | Mapping[str, Any]) -> TaskData:
        """Load the dataset named in ``config.dataset`` (train and ``export onnx`` only: the exported
        run dir carries the evaluation split, so bench never reads the dataset). A mapping is a run
        dir's config.json, made into its ``TrainConfig`` first."""
        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(config)
        return self.datasets[config.dataset](config)

    def targets_for_training(self, x: np.ndarray, y: np.ndarray, info: dict) -> np.ndarray:
        """What the training graph is fitted to (``y`` itself unless the task says otherwise)."""
        return self.train_targets(x, y, info) if self.train_targets else y

    def loss_for(self, config: TrainConfig, info: dict | None):
        """The training graph's loss: ``training_loss``'s for this run, else ``loss``."""
        chosen = self.training_loss(config, info) if self.training_loss and info is not None else None
        return self.loss if chosen is None else chosen

    def to_serving(self, model, config: TrainConfig, info: dict):
        """The model users run and export (the trained model itself unless the task says otherwise)."""
        return self.serving_model(model, config, info) if self.serving_model else model

    def companions(self, model, config: TrainConfig, info: dict) -> dict:
        """The served models a run keeps beside the one users run (``companion_models``): name -> model."""
        return self.companion_models(model, config, info) if self.companion_models else {}
