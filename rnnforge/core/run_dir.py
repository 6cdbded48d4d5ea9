"""The run directory: what ``rnnforge train`` leaves and ``export``/``bench`` read.

RUN_DIR/config.json          everything needed to rebuild, export and bench (task, options, data info)
RUN_DIR/model.keras          the trained model, loadable by plain tf-keras
RUN_DIR/model.NAME.keras     a served model kept beside it (the forecaster's distilled run: model.ensemble.keras)
RUN_DIR/metrics.json         per-epoch history, restarts, throughput, test-split scores
RUN_DIR/mlflow.json          the MLflow run of the run dir (with --mlflow-tracking-uri)
RUN_DIR/architecture.txt     the Keras model summary
RUN_DIR/*.png                training curve, confusion matrix, ...
RUN_DIR/checkpoints/         Ray Train storage (per-epoch checkpoints) unless --storage-path
RUN_DIR/tensorboard/         TensorBoard logs (train/ and validation/ scalars per epoch)
RUN_DIR/model.onnx           written by ``rnnforge export onnx``, with parity.json and eval.npz
RUN_DIR/eval.npz             the evaluation inputs, labels and TensorFlow's outputs on them: what
                             ``bench`` scores and checks parity against, without the dataset or TensorFlow
RUN_DIR/bench/               written by ``rnnforge bench`` (bench/tf_timing.json: the last TensorFlow
                             timing, reused where TensorFlow is not installed; bench/serving.json:
                             what 'bench load --slo-p99-ms' chose)

Every file here that a command reads is read through ``rnnforge.core.run_files``: checked against
its declared schema before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnforge.core.errors import UserError, first_line
from rnnforge.core.run_files import read_config


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's artifacts."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    def companion(self, name: str) -> Path:
        """A served model kept beside model.keras (``TaskSpec.companion_models``): ``model.NAME.keras``."""
        return self.path / f"model.{name}.keras"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def architecture(self) -> Path:
        return self.path / "architecture.txt"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def onnx(self) -> Path:
        return self.path / "model.onnx"

    @property
    def parity(self) -> Path:
        return self.path / "parity.json"

    def parity_of(self, onnx_path: Path) -> Path:
        """The parity record of the ONNX file ``onnx_path``: parity.json for RUN_DIR/model.onnx,
        else beside the file (``other.onnx`` -> ``other.parity.json``), so it describes that file."""
        if Path(onnx_path).absolute() == self.onnx.absolute():
            return self.parity
        return Path(onnx_path).with_suffix(".parity.json")

    @property
    def eval_set(self) -> Path:
        return self.path / "eval.npz"

    @property
    def bench(self) -> Path:
        return self.path / "bench"

    @property
    def tf_timing(self) -> Path:
        return self.bench / "tf_timing.json"

    def artifacts(self) -> list[Path]:
        """Every file or directory rnnforge writes into the run dir (what --overwrite removes)."""
        names = (
            "config.json",
            "model.keras",
            "metrics.json",
            "architecture.txt",
            "checkpoints",
            "tensorboard",
            "model.onnx",
            "model.fp16.onnx",
            "model.ensemble.keras",
            "model.ensemble.onnx",
            "model.ensemble.parity.json",
            "parity.json",
            "eval.npz",
            "bench",
        )
        # plus what a killed atomic write left (".NAME.<random>.tmp...", see rnnforge.core.fileio): never read, safe to remove
        return [self.path / n for n in names] + sorted(self.path.glob("*.png")) + sorted(self.path.glob(".*.tmp*"))

    def load_config(self, known_tasks: Sequence[str], require_model: bool = True) -> dict:
        """Read config.json of a finished training run of one of ``known_tasks``, checked against its
        schema (``run_files.read_config``); one-line errors otherwise.

        ``require_model=False`` (bench) accepts a run dir without ``model.keras``: a copy made for
        an inference machine needs only config.json and the files ``export onnx`` wrote."""
        if not self.path.is_dir():
            what = "is a file, not a folder" if self.path.exists() else "does not exist"
            raise UserError(f"run dir {self.path} {what} (expected the --run-dir of 'rnnforge train')")
        if not self.config.is_file():
            raise UserError(f"{self.config} is missing: {self.path} is not a finished 'rnnforge train' run")
        config = read_config(self.config, known_tasks)  # its schema: core/schemas/config.schema.json
        if require_model and not self.model.is_file():
            raise UserError(f"{self.model} is missing: the training run in {self.path} did not finish")
        return config

    def load_model(self):
        """Load model.keras with plain tf-keras."""
        from tensorflow import keras

        try:
            return keras.models.load_model(self.model, compile=False)
        except Exception as exc:  # corrupt or foreign file
            raise UserError(f"{self.model} cannot be loaded by tf-keras: {first_line(exc)}") from None
