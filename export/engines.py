"""The engines ``rnnforge bench`` times: ONNX Runtime sessions and TensorFlow's ``tf.function``.

``provider_setup`` turns ``--provider`` and its options into what ``InferenceSession`` takes;
``OrtEngine`` opens the session and refuses one that did not get the requested provider (never a
CPU figure labelled GPU); ``TfEngine`` wraps a ``tf.function`` with the same interface. Both
give ``bind(x)`` (a zero-argument call to time) and ``predict(x)`` (the first output on the
host); ``x`` is one array, or arrays keyed by input name for a model with several inputs
(``core.arrays.Inputs``). ONNX Runtime, onnx and TensorFlow are imported inside the
functions that use them.

    setup = provider_setup(BenchSettings(provider="cuda"), Path("runs/sketch/model.onnx"), (100, 3), Path("/tmp"))
    engine = OrtEngine(Path("runs/sketch/model.onnx"), setup, threads=2)
    probabilities = engine.predict(strokes)  # float32 [batch, time, 3] -> [batch, classes]
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnforge.core.arrays import Inputs, feeds, first
from rnnforge.core.errors import ProviderError, UserError, first_line
from rnnforge.core.run_files import ModelInput, model_inputs  # noqa: F401  (this module's names too)
from rnnforge.export.settings import BenchSettings


def model_input(onnx_model) -> ModelInput:
    """The first graph input of ``onnx_model`` (a ModelProto)."""
    return model_inputs(onnx_model)[0]


def invalid_argument(error: BaseException) -> bool:
    """Whether ``error`` is ONNX Runtime's ``InvalidArgument``: a feed the model does not take (a
    name, dtype or shape), which is the input's fault, never a crash inside the engine."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
    except ImportError:
        return False
    return isinstance(error, InvalidArgument)


#: What a provider that ONNX Runtime dropped most likely lacked, by ``--provider``.
MISSING = {
    "cuda": "no GPU or CUDA/cuDNN libraries",
    "tensorrt": "the TensorRT libraries (libnvinfer) are not installed or not on the library path, or no GPU",
}


@dataclass
class ProviderSetup:
    """How ONNX Runtime sessions are created: providers, their options, IOBinding and device."""

    name: str  # cpu, cuda or tensorrt
    providers: list = field(default_factory=list)  # names or (name, options) tuples, for InferenceSession
    io_binding: bool = False
    device: str = "cpu"  # where IOBinding puts inputs and outputs
    cuda_graph: bool = False  # one session per input shape (a CUDA graph fixes the shapes)
    requested: dict = field(default_factory=dict)  # --provider-option values: the session must report them back

    def options(self) -> dict:
        """Every provider's options, for the report."""
        return {p[0]: p[1] for p in self.providers if isinstance(p, tuple)}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "providers": [list(p) if isinstance(p, tuple) else p for p in self.providers],
            "io_binding": self.io_binding,
            "device": self.device,
            "cuda_graph": self.cuda_graph,
            "requested": self.requested,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ProviderSetup:
        providers = [tuple(p) if isinstance(p, list) else p for p in data["providers"]]
        return cls(data["name"], providers, data["io_binding"], data["device"], data["cuda_graph"], data["requested"])


def provider_setup(
    settings: BenchSettings, model_path: Path, example_shape: tuple | dict, out_dir: Path, variant: str = "fp32"
) -> ProviderSetup:
    """Providers with their options for ``settings.provider``; ``settings.provider_options`` override
    the defaults. ``example_shape`` is the first input's shape (no batch axis), or every input's
    keyed by name, for TensorRT's profiles.

    cuda: cuDNN picks convolution algorithms exhaustively, Conv1D models pad to NC1D
    (``cudnn_conv1d_pad_to_nc1d``), ``enable_cuda_graph`` on request. tensorrt: an engine cache in
    ``out_dir/trt_cache``, fp16 for the fp16 variant, shape profiles spanning the batch sizes (and
    sequence lengths). IOBinding (inputs and outputs on the device) is on for GPU providers.
    GPU lists hold no ``CPUExecutionProvider``: their sessions refuse to run a node on the CPU
    (``STRICT_PLACEMENT``, set by ``open_session``), which ONNX Runtime allows only without it.
    """
    import onnx

    provider = settings.provider
    if settings.cuda_graph and provider == "cpu":
        raise UserError("--cuda-graph needs --provider cuda or tensorrt")
    user_options = dict(settings.provider_options or {})
    model = onnx.load(str(model_path), load_external_data=False)
    cuda = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}
    if has_conv1d(model):
        cuda["cudnn_conv1d_pad_to_nc1d"] = "1"
    if settings.cuda_graph:
        cuda["enable_cuda_graph"] = "1"
    providers: list = ["CPUExecutionProvider"]
    if provider == "cuda":  # no CPU EP: every node must be placed on the GPU (``open_session``)
        providers = [("CUDAExecutionProvider", {**cuda, **user_options})]
    elif provider == "tensorrt":
        trt = {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(Path(out_dir) / "trt_cache"),
            "trt_timing_cache_enable": "True",
            "trt_fp16_enable": str(variant == "fp16"),
            **shape_profiles(model_inputs(model), example_shape, settings.batch_sizes, settings.seq_lengths),
        }
        providers = [
            ("TensorrtExecutionProvider", {**trt, **user_options}),
            ("CUDAExecutionProvider", cuda),
        ]
    elif user_options:
        providers = [("CPUExecutionProvider", user_options)]
    gpu = provider != "cpu"
    return ProviderSetup(
        provider,
        providers,
        io_binding=gpu if settings.io_binding is None else settings.io_binding,
        device="cuda" if gpu else "cpu",
        cuda_graph=settings.cuda_graph,
        requested=user_options,
    )


def shape_profiles(inputs: list[ModelInput], example_shape: tuple | dict, batch_sizes, seq_lengths) -> dict[str, str]:
    """TensorRT optimisation profile over the dynamic axes of every input with an example shape
    (``example_shape``: the first input's, or each input's by name): min/opt/max batch (and the
    first input's length)."""
    shapes = example_shape if isinstance(example_shape, dict) else {inputs[0].name: tuple(example_shape)}
    batches = sorted(batch_sizes)

    def shape(inp: ModelInput, batch: int, length: int | None) -> str:
        dims = [batch, *shapes[inp.name]]
        if length is not None:
            dims[1] = length
        return f"{inp.name}:" + "x".join(str(d) for d in dims)

    profiles = {"min": [], "opt": [], "max": []}
    for index, inp in enumerate(i for i in inputs if i.name in shapes):
        example = shapes[inp.name]
        lengths = sorted(seq_lengths or [example[0]]) if example else []
        lo, hi = (lengths[0], lengths[-1]) if inp.dynamic_time and index == 0 else (None, None)
        profiles["min"].append(shape(inp, batches[0], lo))
        profiles["opt"].append(shape(inp, batches[len(batches) // 2], hi))
        profiles["max"].append(shape(inp, batches[-1], hi))
    return {f"trt_profile_{k}_shapes": ",".join(v) for k, v in profiles.items()}


def has_conv1d(onnx_model) -> bool:
    """Whether the graph convolves over one spatial axis (Keras Conv1D: a 1 x k kernel)."""
    for node in onnx_model.graph.node:
        if node.op_type == "Conv":
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
            if len(kernel) == 1 or (len(kernel) == 2 and 1 in kernel and kernel != [1, 1]):
                return True
    return False


def session_options(threads: int | None):
    """The bench's ``SessionOptions``: every graph optimisation, ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return options


#: The session option that makes ONNX Runtime refuse a session with a node on the CPU EP, and the
#: words of its refusals (they name no node: ``unplaced_error`` finds them). The second comes when
#: the requested provider failed to load and onnxruntime's Python retried with the CPU EP listed.
STRICT_PLACEMENT = "session.disable_cpu_ep_fallback"
REFUSED_PLACEMENT = ("fallback to CPU EP has been explicitly disabled", "explicitly added the CPU EP")
CPU = "CPUExecutionProvider"
#: numpy dtypes of ONNX Runtime's input type names, for the probe's zero inputs.
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def provider_name(entry) -> str:
    """``CUDAExecutionProvider`` of ``"CUDAExecutionProvider"`` or ``("CUDAExecutionProvider", {...})``."""
    return entry[0] if isinstance(entry, tuple) else entry


def default_factory():
    import onnxruntime as ort

    return ort.InferenceSession


def open_session(path: Path, setup: ProviderSetup, options, factory=None):
    """Create the ONNX Runtime session; refuse one that did not get the requested provider, that
    would run a node on the CPU behind a GPU provider's back (``STRICT_PLACEMENT``: one line names
    that node and its op), or that does not report back a ``--provider-option`` (ORT drops unknown
    CPU options silently). ``factory`` stands in for ``onnxruntime.InferenceSession`` (tests).

    Returns ``(session, seconds it took)``."""
    import onnxruntime as ort

    wanted = provider_name(setup.providers[0])
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(
            f"--provider {setup.name}: {wanted} is not in this onnxruntime build (available: {', '.join(available)})"
        )
    if setup.name != "cpu" and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA and cuDNN installed as nvidia-* pip packages only once they
        # are preloaded (ORT >= 1.21); system-wide libraries are found either way.
        ort.preload_dlls()
    if setup.name != "cpu":
        options.add_session_config_entry(STRICT_PLACEMENT, "1")
    factory = factory or default_factory()
    started = time.perf_counter()
    try:
        session = factory(str(path), sess_options=options, providers=setup.providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidArgument for bad provider options
        if isinstance(exc, (UserError, MemoryError)):
            raise
        if any(words in str(exc) for words in REFUSED_PLACEMENT):
            raise unplaced_error(path, setup, options.intra_op_num_threads, factory, exc) from None
        raise ProviderError(
            f"--provider {setup.name}: ONNX Runtime could not create a session for {path}: {first_line(exc)}"
        ) from None
    creation = time.perf_counter() - started
    used = session.get_providers()
    if used[0] != wanted:
        raise fell_back(setup, used[0])
    effective = session.get_provider_options().get(wanted, {})
    ignored = [key for key in setup.requested if key not in effective]
    if ignored:
        raise UserError(
            f"--provider-option {ignored[0]}: {wanted} does not take it (the session reports "
            + (f"only {', '.join(sorted(effective))}" if effective else "no options")
            + "); it would be silently ignored"
        )
    return session, creation


def fell_back(setup: ProviderSetup, used: str) -> ProviderError:
    wanted = provider_name(setup.providers[0])
    return ProviderError(
        f"--provider {setup.name}: ONNX Runtime fell back to {used} (no usable "
        f"{wanted}: {MISSING.get(setup.name, 'no GPU or CUDA/cuDNN libraries')}); refusing to label those numbers "
        f"as {setup.name}"
    )


def unplaced_error(path: Path, setup: ProviderSetup, threads: int, factory, refusal: Exception) -> ProviderError:
    """ONNX Runtime refused the strict session (a node would run on the CPU EP): the one line that
    names the first such node and its op, found by a session that may use the CPU (its profile of
    one call on zeros); ORT's own words when that probe cannot run either, and the fall-back
    error when the requested provider did not load at all."""
    wanted = provider_name(setup.providers[0])
    try:
        nodes = probe_nodes(path, [*setup.providers, CPU], threads, None, factory, check=setup)
    except Exception as exc:  # the permissive probe failed too: say what ORT said
        if isinstance(exc, (UserError, MemoryError)):
            raise
        return ProviderError(
            f"--provider {setup.name}: ONNX Runtime would run part of {path} on the CPU instead of {wanted} "
            f"({first_line(refusal)}); the probe that names the node failed: {first_line(exc)}"
        )
    if not any(n["provider"] == CPU for n in nodes):
        return ProviderError(
            f"--provider {setup.name}: ONNX Runtime would run part of {path} on the CPU instead of {wanted}: "
            f"{first_line(refusal)}"
        )
    return unplaced(path, setup, nodes)


#: Operators of shape arithmetic: ONNX Runtime keeps a chain of them that starts at a ``Shape`` on the
#: CPU even in a GPU session (small integer tensors a kernel launch would only slow down).
SHAPE_OPS = frozenset({"Shape", "Size", "Cast", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "ReduceProd"})


def unplaced(path: Path, setup: ProviderSetup, nodes: list[dict]) -> ProviderError:
    """The one line for ``nodes`` (``probe_nodes``) of which some run on the CPU EP; where they are
    all shape arithmetic, it says so and where such nodes come from."""
    wanted = provider_name(setup.providers[0])
    on_cpu = [n for n in nodes if n["provider"] == CPU]
    first_node = on_cpu[0]
    more = f" and {len(on_cpu) - 1} other node(s)" if len(on_cpu) > 1 else ""
    why = ""
    if any(n["op"] == "Shape" for n in on_cpu) and all(n["op"] in SHAPE_OPS for n in on_cpu):
        ops = ", ".join(sorted({n["op"] for n in on_cpu}))
        why = (
            f"; all of them shape arithmetic ({ops}), which ONNX Runtime keeps on the CPU by design: the graph "
            "computes shapes at run time (a Keras Dense layer on a 3-D tensor exports as Tensordot, which does)"
        )
    return ProviderError(
        f"--provider {setup.name}: node {first_node['name']!r} (op {first_node['op']}){more} of {path} cannot be "
        f"placed on {wanted}: ONNX Runtime would run it on the CPU, so the figures would not be {setup.name}'s "
        f"({len(on_cpu)} of {len(nodes)} nodes on {CPU}){why}"
    )


def probe_nodes(path: Path, providers: list, threads: int | None, x: Inputs | None, factory=None, check=None) -> list:
    """Where ONNX Runtime runs each node of ``path``'s optimised graph with ``providers``: one call
    (on ``x``, or on zeros of the inputs' shapes with dynamic axes set to 1 for the batch and 16
    otherwise) in a session with profiling on; ``[{"name", "op", "provider"}]`` in the profile's
    order. ``check``: the setup whose provider the probe must have got (else ``fell_back``)."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="rnnforge-placement-"))
    try:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(work / "placement")
        session = (factory or default_factory())(str(path), sess_options=options, providers=providers)
        if check is not None and session.get_providers()[0] != provider_name(check.providers[0]):
            raise fell_back(check, session.get_providers()[0])
        names = [i.name for i in session.get_inputs()]
        session.run(None, feeds(x, names) if x is not None else zero_feeds(session))
        return profile_nodes(Path(session.end_profiling()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def zero_feeds(session) -> dict[str, np.ndarray]:
    """Zeros for each input of ``session``: dynamic axes 1 for the batch, 16 elsewhere."""
    out = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 16) for i, d in enumerate(inp.shape)]
        out[inp.name] = np.zeros(shape, ORT_DTYPES.get(inp.type, np.float32))
    return out


def profile_nodes(profile: Path) -> list[dict]:
    """The nodes of an ONNX Runtime profile (``end_profiling``'s JSON): each ``Node`` event's
    ``args.op_name`` and ``args.provider``, once per node (its ``_kernel_time`` event)."""
    try:
        events = json.loads(profile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProviderError(
            f"ONNX Runtime's profile {profile} could not be read to find where nodes ran: {exc}"
        ) from None
    if isinstance(events, dict):  # some versions wrap the events
        events = events.get("traceEvents", [])
    nodes, seen = [], set()
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("cat") != "Node":
            continue
        name, args = str(event.get("name", "")), event.get("args") or {}
        if not name.endswith("_kernel_time") or "provider" not in args or name in seen:
            continue
        seen.add(name)
        nodes.append(
            {"name": name.removesuffix("_kernel_time"), "op": args.get("op_name", "?"), "provider": args["provider"]}
        )
    if not nodes:
        raise ProviderError(f"ONNX Runtime's profile {profile} lists no node: where the nodes ran is unknown")
    return nodes


def placement_summary(nodes: list[dict]) -> dict:
    """``{"nodes": total, "by_provider": {provider: count}}`` of ``probe_nodes``' list."""
    by_provider: dict[str, int] = {}
    for node in nodes:
        by_provider[node["provider"]] = by_provider.get(node["provider"], 0) + 1
    return {"nodes": len(nodes), "by_provider": dict(sorted(by_provider.items(), key=lambda kv: -kv[1]))}


class OrtEngine:
    """An ONNX Runtime session (or one per shape, with CUDA graphs) that runs as ``setup`` says.

    ``OrtEngine(path, setup, threads)`` opens the bench's session; ``OrtEngine.from_session`` wraps
    one made elsewhere (e.g. with other ``SessionOptions``, as ``benchmarks/experiments/ort_levers.py`` does).
    """

    def __init__(self, path: Path, setup: ProviderSetup, threads: int | None = None, options=None, factory=None):
        self.path, self.setup, self.factory = Path(path), setup, factory
        self.options = options if options is not None else session_options(threads)
        self.session, self.creation_s = open_session(self.path, setup, self.options, factory)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self._by_shape: dict[tuple, object] = {}
        self._graph_bindings: dict[int, tuple] = {}  # id(session) -> (IOBinding, input OrtValues)

    @classmethod
    def from_session(cls, session, setup: ProviderSetup) -> OrtEngine:
        """Wrap an open ``InferenceSession`` (no CUDA graphs: it cannot be reopened per shape)."""
        if setup.cuda_graph:
            raise UserError("OrtEngine.from_session cannot capture CUDA graphs: open it with OrtEngine(path, ...)")
        engine = cls.__new__(cls)
        engine.path, engine.setup, engine.options, engine.factory = None, setup, None, None
        engine.session, engine.creation_s = session, 0.0
        engine.input_names = [i.name for i in session.get_inputs()]
        engine.input_name = engine.input_names[0]
        engine._by_shape, engine._graph_bindings = {}, {}
        return engine

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def applied(self) -> dict:
        """What the session really runs with: its providers, their options as ONNX Runtime
        reports them (``get_provider_options``) and the thread pools' sizes (0: ORT's default)."""
        return {
            "session_providers": self.session.get_providers(),
            "provider_options": self.session.get_provider_options(),
            "intra_op_threads": self.options.intra_op_num_threads if self.options is not None else None,
            "inter_op_threads": self.options.inter_op_num_threads if self.options is not None else None,
        }

    def placement(self, x: Inputs) -> dict:
        """ONNX Runtime's own assignment of this session's nodes: a second session, same providers
        and options (no CUDA graph: it needs IOBinding), profiles one call on ``x``; a GPU row with a
        node on the CPU EP is refused (``open_session`` already made that impossible)."""
        providers = [
            (p[0], {k: v for k, v in p[1].items() if k != "enable_cuda_graph"}) if isinstance(p, tuple) else p
            for p in self.setup.providers
        ]
        nodes = probe_nodes(self.path, providers, self.options.intra_op_num_threads, x, self.factory, check=self.setup)
        if self.setup.name != "cpu" and any(n["provider"] == CPU for n in nodes):
            raise unplaced(self.path, self.setup, nodes)
        return placement_summary(nodes)

    def _session_for(self, shape: tuple):
        if not self.setup.cuda_graph:
            return self.session
        if shape not in self._by_shape:  # a captured CUDA graph replays one shape only
            self._by_shape[shape] = open_session(self.path, self.setup, self.options, self.factory)[0]
        return self._by_shape[shape]

    def bind(self, x: Inputs):
        """A zero-argument call that runs the model on ``x`` (inputs bound once with IOBinding)."""
        inputs = feeds(x, self.input_names)
        session = self._session_for(first(x).shape)
        if not self.setup.io_binding:
            return lambda: session.run(None, inputs)
        binding = self._bind_on_device(session, inputs)
        return lambda: session.run_with_iobinding(binding)

    def predict(self, x: Inputs) -> np.ndarray:
        """The first output, on the host."""
        inputs = feeds(x, self.input_names)
        session = self._session_for(first(x).shape)
        if not self.setup.io_binding:
            return session.run(None, inputs)[0]
        binding = self._bind_on_device(session, inputs)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _bind_on_device(self, session, inputs: dict[str, np.ndarray]):
        """An IOBinding of ``inputs`` on the device. With CUDA graphs, one per session, kept: a
        captured graph replays on the device addresses it was captured with, so later inputs are
        copied into the same buffers (``update_inplace``) instead of new ones."""
        import onnxruntime as ort

        if self.setup.cuda_graph and id(session) in self._graph_bindings:
            binding, values = self._graph_bindings[id(session)]
            for name, value in inputs.items():
                values[name].update_inplace(np.ascontiguousarray(value))
            return binding
        binding = session.io_binding()
        values = {name: ort.OrtValue.ortvalue_from_numpy(value, self.setup.device, 0) for name, value in inputs.items()}
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for output in session.get_outputs():
            binding.bind_output(output.name, self.setup.device)
        if self.setup.cuda_graph:
            self._graph_bindings[id(session)] = (binding, values)
        return binding


class TfEngine:
    """TensorFlow's ``tf.function`` with the same interface as ``OrtEngine``; ``call`` takes the
    inputs positionally, in the order of ``input_names``."""

    def __init__(self, call, input_names: list[str] | None = None):
        self.call = call
        self.input_names = input_names or list(getattr(call, "input_names", [])) or [None]

    def _arguments(self, x: Inputs) -> list:
        return list(feeds(x, self.input_names).values()) if isinstance(x, dict) else [x]

    def bind(self, x: Inputs):
        arguments = self._arguments(x)
        return lambda: _on_host(self.call(*arguments))

    def predict(self, x: Inputs) -> np.ndarray:
        """The first output, on the host (as ``OrtEngine.predict``)."""
        out = _on_host(self.call(*self._arguments(x)))
        return out[0] if isinstance(out, list) else out


def _on_host(out):
    """A model's output(s) as numpy: every output of a model with several (a quantile forecaster)."""
    return [o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy()


def tf_function(model, spec, threads: int | None):
    """``model`` as a ``tf.function`` with the spec's fixed input signature, on ``threads`` intra-op
    threads (set before TensorFlow's first op in this process, else left as they are). It takes
    the model's inputs positionally; ``.input_names`` lists them in that order."""
    import tensorflow as tf

    if threads:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    from rnnforge.export.onnx_export import input_signature

    signature = input_signature(model, spec)

    def call(*inputs):
        return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    function = tf.function(call, input_signature=signature)
    function.input_names = [t.name for t in signature]
    return function
