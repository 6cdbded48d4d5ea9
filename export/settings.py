"""``BenchSettings``: what ``rnnforge bench`` measures and how, in one object.

The CLI builds it from its options; ``run_bench`` checks it once and hands it, as JSON, to each
engine's timing process, so every engine runs the same batch sizes, lengths and thread count.

    from rnnforge.export.settings import BenchSettings
    settings = BenchSettings(batch_sizes=(1, 8), warmup=2, runs=20)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from rnnforge.core.errors import UserError
from rnnforge.core.stats import examples_needed

PROVIDERS = ("cpu", "cuda", "tensorrt")
#: The top-1 agreement with TensorFlow that each variant's engine is judged on, by its 95 % Wilson
#: lower bound (``core.stats.rate_gate``): fp32 (and the ensemble) 99.9 %, fp16 99 %; int8's is its
#: task's export gate (``Int8Spec.min_top1_agreement``, 99 %).
AGREEMENT_THRESHOLDS = {"fp32": 0.999, "fp16": 0.99, "ensemble": 0.999}
#: ``export onnx --eval-examples`` by default: the held-out examples the agreement gates are judged
#: on, the fewest that can establish the strictest default threshold (99.9 %: 3,838 with no
#: disagreement). ``eval.npz`` stores that many of the evaluation split for bench, at most 64 MiB
#: of inputs (the video task's 16 x 64 x 64 x 3 uint8 clips are 192 KiB: 341 fit).
DEFAULT_EVAL_EXAMPLES = examples_needed(max(AGREEMENT_THRESHOLDS.values()))
DEFAULT_EVAL_BYTES = 64 * 2**20
#: ``ensemble``: the ensemble a distilled forecaster keeps beside its student (model.ensemble.onnx)
VARIANTS = ("fp32", "fp16", "int8", "ensemble")
#: ``--tf-baseline``: measure TensorFlow when it can run here, else use the last recorded timing
#: (auto); insist on one of them (measure, recorded); or leave TensorFlow out (none).
TF_BASELINES = ("auto", "measure", "recorded", "none")
#: The upper limits of bench's numbers, with the reason --help and the error give.
LIMITS = {
    "max_seconds": (3600, "(seconds per batch size and engine; p50 and p90 settle within seconds)"),
    "warmup": (100_000, "(untimed runs: a few settle the caches and allocators)"),
    "target_ci": (0.5, "(a fraction of the p50: 0.01 asks for its 95 % interval within 1 %)"),
    "runs": (10_000_000, "(--max-seconds ends the timing of a batch size long before)"),
    "threads": (1024, "(intra-op threads beyond the cores only contend)"),
}


def variant_path(fp32_path: Path, variant: str) -> Path:
    """Where a variant of ``fp32_path`` lives: ``model.onnx`` -> ``model.int8.onnx`` for int8."""
    return Path(fp32_path) if variant == "fp32" else Path(fp32_path).with_suffix(f".{variant}.onnx")


@dataclass(frozen=True)
class BenchSettings:
    """Every ``rnnforge bench`` option but the run dir and ``--model``.

    ``threads`` is the intra-op thread count of both engines (``None``: every core this process
    may run on); ``provider_options`` override the requested provider's defaults. ``warmup``:
    untimed calls per row, ``None`` (``--warmup auto``) until the latency is stable
    (``core.stats.warmup_calls``); ``target_ci``: time each row until its p50's 95 % interval lies
    within this fraction of the p50 or ``max_seconds`` end it (``runs`` does not cap it then).
    """

    provider: str = "cpu"
    variants: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1, 32, 256)
    seq_lengths: tuple[int, ...] = ()
    warmup: int | None = None
    runs: int = 100
    max_seconds: float = 5.0
    threads: int | None = None
    io_binding: bool | None = None
    cuda_graph: bool = False
    provider_options: dict = field(default_factory=dict)
    tf_baseline: str = "auto"
    target_ci: float | None = None

    def checked(self) -> BenchSettings:
        """These settings with ``threads`` resolved; one-line errors name the option."""
        if self.provider not in PROVIDERS:
            raise UserError(f"--provider {self.provider!r}: expected one of {', '.join(PROVIDERS)}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise UserError(
                f"--variants: unknown variant {unknown[0] if unknown else '(none)'!r}; expected one or more of {', '.join(VARIANTS)}"
            )
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.tf_baseline not in TF_BASELINES:
            raise UserError(f"--tf-baseline {self.tf_baseline!r}: expected one of {', '.join(TF_BASELINES)}")
        if self.cuda_graph and self.provider == "cpu":
            raise UserError("--cuda-graph needs --provider cuda or tensorrt")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if (self.warmup is not None and self.warmup < 0) or self.runs < 1 or not self.max_seconds > 0:
            raise UserError("--warmup must be >= 0 (or auto), --runs >= 1 and --max-seconds > 0")
        if self.target_ci is not None and not self.target_ci > 0:
            raise UserError(
                f"--target-ci must be a fraction above 0 (0.02: within 2 % of the p50), got {self.target_ci}"
            )
        for option, value, (limit, why) in (
            ("--max-seconds", self.max_seconds, LIMITS["max_seconds"]),
            ("--warmup", self.warmup or 0, LIMITS["warmup"]),
            ("--target-ci", self.target_ci or 0, LIMITS["target_ci"]),
            ("--runs", self.runs, LIMITS["runs"]),
            ("--threads", self.threads or 1, LIMITS["threads"]),
        ):
            if not value <= limit:  # NaN and infinity included
                raise UserError(f"{option} must be at most {limit} {why}, got {value}")
        return dataclasses.replace(
            self,
            variants=tuple(v for v in VARIANTS if v in self.variants),
            batch_sizes=tuple(self.batch_sizes),
            seq_lengths=tuple(self.seq_lengths or ()),
            threads=self.threads or available_cores(),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchSettings:
        tuples = {"variants", "batch_sizes", "seq_lengths"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
