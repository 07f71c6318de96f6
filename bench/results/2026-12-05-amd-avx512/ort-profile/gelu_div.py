"""Does ONNX Runtime fuse airbench's GELUs if the export divides by sqrt 2 instead of multiplying by 1/sqrt 2
(the form its GELU fusion is written for)? Rewrites the graph, then times both twice, alternating.

    python gelu_div.py airbench.onnx      # an fp32 export of airbench (engine export onnx RUN)
"""
import collections, sys, time, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
src = sys.argv[1]
m = onnx.load(src); g = m.graph
consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
for n in g.node:
    if n.op_type == "Constant":
        consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
users = collections.defaultdict(list)
for n in g.node:
    for i in n.input: users[i].append(n)
k = 0
for n in list(g.node):
    if n.op_type == "Mul" and any(u.op_type == "Erf" for u in users[n.output[0]]):
        c = [i for i in n.input if i in consts and np.allclose(consts[i], 1 / np.sqrt(2))]
        if c:
            name = f"sqrt2_{k}"; k += 1
            g.initializer.append(numpy_helper.from_array(np.array(np.sqrt(2), np.float32), name))
            x = [i for i in n.input if i != c[0]][0]
            n.op_type = "Div"; del n.input[:]; n.input.extend([x, name])
print("rewritten", k)
div = src[:-5] + "-div.onnx"
onnx.save(m, div)
x = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
for path in [src, div] * 2:
    o = ort.SessionOptions(); o.optimized_model_filepath = path + ".opt"
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    a = s.run(None, {"images": x})[0]
    t = time.perf_counter()
    for _ in range(8): s.run(None, {"images": x})
    ops = collections.Counter(nd.op_type for nd in onnx.load(path + ".opt").graph.node)
    print(path.split("/")[-1], f"{8*256/(time.perf_counter()-t):.0f} img/s", "fused Gelu:", "Gelu" in ops,
          "Erf:", ops.get("Erf"), "ReorderOutput:", ops.get("ReorderOutput"))
