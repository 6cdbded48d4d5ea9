"""ORT-only timing of the video model fp32 / int8 (previous recipe) / int8 (static only), interleaved rounds at
2 and 1 intra-op threads, random uint8 clips: python int8_video_ort_threads.py DIR (DIR holds fp32.onnx,
int8_before.onnx, int8_static_only.onnx); writes $OUT/int8_video_quiet_ort.json."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

out = {
    "cpu": Path("/proc/cpuinfo").read_text().split("model name")[1].split("\n")[0],
    "nproc": os.cpu_count(),
    "ort": ort.__version__,
    "load_before": os.getloadavg(),
    "rows": {},
}
models = ["fp32", "int8_before", "int8_static_only"]
rng = np.random.default_rng(0)
x = {b: rng.integers(0, 256, size=(b, 16, 64, 64, 3), dtype=np.uint8) for b in (1, 256)}
for threads in (2, 1):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    s = {m: ort.InferenceSession(f"{sys.argv[1]}/{m}.onnx", o, providers=["CPUExecutionProvider"]) for m in models}
    name = s["fp32"].get_inputs()[0].name
    res = {m: {b: [] for b in x} for m in models}
    for _round in range(3):
        for b in x:
            for m in models:
                for _ in range(2):
                    s[m].run(None, {name: x[b]})
                t = []
                end = time.perf_counter() + (2.0 if b == 256 else 0.5)
                while len(t) < 5 or time.perf_counter() < end:
                    a = time.perf_counter()
                    s[m].run(None, {name: x[b]})
                    t.append(time.perf_counter() - a)
                res[m][b].append(float(np.median(t)) * 1e3)
    out["rows"][threads] = {m: {b: float(np.median(v)) for b, v in d.items()} for m, d in res.items()}
    print(threads, json.dumps(out["rows"][threads]), flush=True)
out["load_after"] = os.getloadavg()
os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
Path(os.environ.get("OUT", "/tmp"), "int8_video_quiet_ort.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out)[:600])
