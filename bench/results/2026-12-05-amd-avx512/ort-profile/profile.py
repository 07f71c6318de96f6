"""Where ONNX Runtime's time goes for a model's fp32 export at batch 256, by operator type, from ONNX
Runtime's own profiler; and the operators of the graph it optimised.

    python profile.py airbench|resnet9
"""
import collections, json, os, sys, tempfile, time
import numpy as np, onnxruntime as ort, keras
from engine import models
from engine.export.load import Exportable
from engine.kernels import Preprocess
from engine.export.onnx import export_onnx

name = sys.argv[1] if len(sys.argv) > 1 else "airbench"
keras.mixed_precision.set_global_policy("float32"); keras.utils.set_random_seed(0)
spec = models.get(name); size = models.input_size(spec, 0)
exp = Exportable(models.build(spec.name, size, 10), Preprocess(size, spec.normalization), [str(i) for i in range(10)], {}, data_source="")
d = tempfile.mkdtemp()
path = export_onnx(exp, os.path.join(d, f"{name}.onnx"))
x = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
o = ort.SessionOptions(); o.enable_profiling = True; o.profile_file_prefix = os.path.join(d, name)
o.optimized_model_filepath = os.path.join(d, f"{name}-opt.onnx")
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
s.run(None, {"images": x})
t = time.perf_counter(); n = 5
for _ in range(n): s.run(None, {"images": x})
print(f"{name}: {n*256/(time.perf_counter()-t):.0f} img/s")
prof = s.end_profiling()
ev = json.load(open(prof))
by = collections.Counter(); cnt = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        op = e["args"].get("op_name"); by[op] += e["dur"]; cnt[op] += 1
tot = sum(by.values())
for op, us in by.most_common(15):
    print(f"{op:28s} {us / 1e3 / (n + 1):9.1f} ms/batch {us / tot:6.1%}  nodes/run {cnt[op] // (n + 1)}")
import onnx
g = onnx.load(os.path.join(d, f"{name}-opt.onnx")).graph
print("optimized graph ops:", collections.Counter(nd.op_type for nd in g.node).most_common())
