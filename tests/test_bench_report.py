"""bench.report turns pytest-benchmark JSON into a table with ratios to Keras fit, and a chart."""
import json

from bench import report


def _bench(config, img_s, xla=False, spc=10):
    return {"stats": {"rounds": 3}, "extra_info": {
        "config": config, "img_s": img_s, "model": "resnet9", "batch": 128, "precision": "float32",
        "xla": xla, "steps_per_call": spc, "device": "Test CPU, 2 cores", "tensorflow": "2.21.0"}}


def test_report_table_ratios_and_chart(tmp_path):
    data = {"datetime": "2026-11-23T10:00:00", "benchmarks": [
        _bench("keras fit", 50.0), _bench("loop fp32 spc10", 65.0), _bench("loop xla spc10", 25.0, xla=True),
        {"stats": {"rounds": 1}, "extra_info": {}}]}  # a benchmark of another kind is skipped
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert report.main([str(path), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| resnet9 |")]
    assert lines[0].startswith("| resnet9 | 128 | keras fit |") and lines[0].endswith("| 50.0 | 1.00× | 1.00× | – | – |")
    assert lines[1].endswith("| 10 | 65.0 | 1.30× | 1.30× | – | – |")
    assert lines[2].endswith("| on | 10 | 25.0 | 0.50× | 0.50× | – | – |")
    assert "2026-11-23" in md and "Test CPU, 2 cores" in md
    assert (tmp_path / "r" / "train_throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_loops_are_set_against_fit_in_their_own_precision(tmp_path):
    """A bfloat16 loop row is compared with fit in bfloat16 (like for like) as well as with fit in float32,
    and the goal is judged per precision: a bfloat16 loop beating float32 fit does not meet it."""
    bf16 = [_bench(c, v) for c, v in (("keras fit amp", 120.0), ("loop amp spc10", 132.0))]
    for b in bf16:
        b["extra_info"]["precision"] = "mixed_bfloat16"
    md = _report(tmp_path, [_bench("keras fit", 50.0), _bench("loop fp32 spc10", 60.0), *bf16])
    assert "| resnet9 | 128 | loop amp spc10 | mixed_bfloat16 | off | 10 | 132.0 | 2.64× | 1.10× | – | – |" in md
    assert "| resnet9 | 128 | keras fit amp | mixed_bfloat16 | off | – | 120.0 | 2.40× | 1.00× | – | – |" in md
    assert "| resnet9: our loop ≥ 1.3× Keras fit in float32 | 1.20× (loop fp32 spc10) | **no** |" in md
    assert "| resnet9: our loop ≥ 1.3× Keras fit in mixed_bfloat16 | 1.10× (loop amp spc10) | **no** |" in md


def test_stock_fit_rows_get_their_own_column_and_leave_the_like_for_like_goal_alone(tmp_path):
    """A `fit` row on the plain Keras model ("... stock") is the baseline of its own column, in its own
    precision; the ratio columns and the goal keep `fit` on the engine's model, whichever row comes first."""
    bf16 = [_bench(c, v) for c, v in (("keras fit amp stock", 80.0), ("keras fit amp", 120.0), ("loop amp spc10", 132.0))]
    for b in bf16:
        b["extra_info"]["precision"] = "mixed_bfloat16"
    md = _report(tmp_path, [_bench("keras fit stock", 40.0), _bench("keras fit", 50.0), _bench("loop fp32 spc10", 60.0), *bf16])
    assert "| resnet9 | 128 | loop amp spc10 | mixed_bfloat16 | off | 10 | 132.0 | 2.64× | 1.10× | 1.65× | – |" in md
    assert "| resnet9 | 128 | loop fp32 spc10 | float32 | off | 10 | 60.0 | 1.20× | 1.20× | 1.50× | – |" in md
    assert "| resnet9 | 128 | keras fit stock | float32 | off | – | 40.0 | 0.80× | 0.80× | 1.00× | – |" in md
    assert "| resnet9: our loop ≥ 1.3× Keras fit in mixed_bfloat16 | 1.10× (loop amp spc10) | **no** |" in md
    assert "| resnet9: our loop ≥ 1.3× Keras fit in float32 | 1.20× (loop fp32 spc10) | **no** |" in md


def test_report_bad_input(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing.json")]) == 2
    (tmp_path / "e.json").write_text('{"benchmarks": []}')
    assert report.main([str(tmp_path / "e.json")]) == 2
    assert "holds no throughput benchmarks" in capsys.readouterr().err


def _inf(backend, model="tiny", **kw):
    return {"stats": {"rounds": 5}, "extra_info": {"kind": "inference", "model": model, "backend": backend,
                                                     "device": "Test CPU", **kw}}


def _report(tmp_path, benchmarks) -> str:
    """Run the report CLI on these benchmarks; return report.md."""
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"datetime": "2026-11-23T10:00:00", "benchmarks": benchmarks}))
    assert report.main([str(path), "--out", str(tmp_path)]) == 0
    return (tmp_path / "report.md").read_text()


def test_report_inference_table(tmp_path):
    md = _report(tmp_path, [
        _inf("keras", p50_ms=2.0, p90_ms=3.0, p99_ms=4.0), _inf("keras", img_s=1000.0),
        _inf("onnxruntime", p50_ms=0.5, p90_ms=0.6, p99_ms=0.9), _inf("onnxruntime", img_s=2500.0)])
    assert "| tiny | keras | 2.00 | 3.00 | 4.00 | 1000 | 1.00× | 1.00× | – |" in md
    assert "| tiny | onnxruntime | 0.50 | 0.60 | 0.90 | 2500 | 4.00× | 2.50× | – |" in md
    assert not (tmp_path / "train_throughput.png").exists()  # no training rows, no training chart


def test_report_goals_and_input_pipeline(tmp_path):
    md = _report(tmp_path, [
        _bench("keras fit", 50.0), _bench("loop fp32 spc10", 65.0), _bench("loop xla spc10", 40.0, xla=True),
        {"stats": {"rounds": 3}, "extra_info": {"kind": "input", "model": "resnet9", "img_s": 300.0}},
        _inf("keras", "resnet9", p50_ms=2.0, img_s=100.0), _inf("onnxruntime", "resnet9", p50_ms=1.0, img_s=120.0)])
    assert "| resnet9: our loop ≥ 1.3× Keras fit in float32 | 1.30× (loop fp32 spc10) | yes |" in md
    assert "| resnet9: ONNX Runtime ≥ 1.5× Keras at batch 256 | 1.20× | **no** |" in md
    assert "| resnet9: ONNX Runtime ≥ 1.5× Keras batch-1 latency (p50) | 2.00× | yes |" in md
    assert "| resnet9: input pipeline ≥ 5× the step's consumption | 4.6× | **no** |" in md
    assert "| resnet9 | 300 | 65.0 (loop fp32 spc10) | 4.6× |" in md
    assert (tmp_path / "inference.png").read_bytes()[:4] == b"\x89PNG"


def test_report_sets_training_rows_against_the_measured_peak(tmp_path):
    row = _bench("loop fp32 spc10", 100.0)
    row["extra_info"]["train_gflop_per_image"] = 2.0  # 100 img/s x 2 GFLOP = 200 GFLOP/s
    bf16 = _bench("loop amp spc10", 150.0)
    bf16["extra_info"].update(train_gflop_per_image=2.0, precision="mixed_bfloat16")
    peak = [{"stats": {"rounds": 3}, "extra_info": {"kind": "peak", "op": op, "dtype": d, "gflop_s": g}}
            for op, d, g in [("conv3x3", "float32", 400.0), ("conv3x3", "bfloat16", 3000.0), ("matmul", "float32", 350.0)]]
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"datetime": "2026-12-02T10:00:00", "benchmarks": [row, bf16, *peak]}))
    assert report.main([str(path), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| loop fp32 spc10 | float32 | off | 10 | 100.0 | – | – | – | 200 (50%) |" in md
    assert "| loop amp spc10 | mixed_bfloat16 | off | 10 | 150.0 | – | – | – | 300 (10%) |" in md
    assert "| conv3x3 | 400 | 3000 |" in md and "| matmul | 350 | – |" in md


def test_like_for_like_goal_says_what_it_would_take_of_the_machines_peak(tmp_path):
    """1.3x fit's rate, in FLOP/s, as a fraction of the conv peak in fit's precision: 1.3 x 100 img/s x
    2 GFLOP = 260 GFLOP/s against 400 (float32) and against 3000 (bfloat16 fit at 150 img/s: 390)."""
    fit, loop = _bench("keras fit", 100.0), _bench("loop fp32 spc10", 104.0)
    fit_bf16, loop_bf16 = _bench("keras fit amp", 1000.0), _bench("loop amp spc10", 1040.0)
    for b in (fit, loop, fit_bf16, loop_bf16):
        b["extra_info"]["train_gflop_per_image"] = 2.0
    for b in (fit_bf16, loop_bf16):
        b["extra_info"]["precision"] = "mixed_bfloat16"
    peak = [{"stats": {"rounds": 3}, "extra_info": {"kind": "peak", "op": "conv3x3", "dtype": d, "gflop_s": g}}
            for d, g in [("float32", 400.0), ("bfloat16", 3000.0)]]
    md = _report(tmp_path, [fit, loop, fit_bf16, loop_bf16, *peak])
    assert ("| resnet9: our loop ≥ 1.3× Keras fit in float32 | 1.04× (loop fp32 spc10; 1.3× fit would be 65% "
            "of the conv peak) | **no** |") in md
    assert ("| resnet9: our loop ≥ 1.3× Keras fit in mixed_bfloat16 | 1.04× (loop amp spc10; 1.3× fit would be "
            "87% of the conv peak) | **no** |") in md
    md = _report(tmp_path, [fit, loop])  # no peak measured: the ratio alone
    assert "| resnet9: our loop ≥ 1.3× Keras fit in float32 | 1.04× (loop fp32 spc10) | **no** |" in md


def test_cpu_deployment_goals_take_the_fastest_runtime_of_each_kind(tmp_path):
    """bf16 and int8 at batch 256 and batch-1 latency, each the best row of its kind against Keras; the
    report says when the CPU it ran on has no AMX, for which the goals are set."""
    def rows(features):
        kw = {} if features is None else {"cpu_features": features}
        return [_inf("keras", p50_ms=2.0, img_s=1000.0, **kw), _inf("openvino f32", p50_ms=0.45, img_s=2000.0, **kw),
                _inf("openvino bf16", p50_ms=0.5, img_s=5500.0, **kw), _inf("openvino int8", p50_ms=0.3, img_s=7000.0, **kw),
                _inf("onnxruntime int8", p50_ms=0.4, img_s=7500.0, **kw)]
    md = _report(tmp_path, rows("avx512_bf16 avx512_vnni avx512f avx2"))
    assert ("| tiny: best bf16 runtime ≥ 5× Keras at batch 256 (on a CPU with AMX) | 5.50× (openvino bf16; "
            "this CPU has no AMX) | yes |") in md
    assert ("| tiny: best int8 runtime ≥ 8× Keras at batch 256 (on a CPU with AMX) | 7.50× (onnxruntime int8; "
            "this CPU has no AMX) | **no** |") in md
    assert ("| tiny: best runtime ≥ 5× Keras in batch-1 p50 latency (on a CPU with AMX) | 6.67× (openvino int8; "
            "this CPU has no AMX) | yes |") in md
    md = _report(tmp_path, rows("amx_bf16 amx_int8 avx512_bf16 avx512f"))
    assert "| 5.50× (openvino bf16) | yes |" in md and "no AMX" not in md
    md = _report(tmp_path, rows(None))  # rows from before the features were recorded: nothing said of AMX
    assert "| 5.50× (openvino bf16) | yes |" in md and "no AMX" not in md


def _rate(precision, gflop_s, shape="256x8x8x512", ran=None):
    return {"stats": {"rounds": 5}, "extra_info": {"kind": "inference_peak", "runtime": "openvino", "precision": precision,
                                                   "ran": ran or precision, "shape": shape, "gflop_s": gflop_s}}


def test_inference_rows_are_set_against_the_rate_of_the_precision_they_compute_in(tmp_path):
    """Each precision's fastest stack is its rate; a bf16 hint that ran in f32 is an f32 measurement; a
    row's GFLOP/s (img/s x forward GFLOP per image) is set against the rate of its `compute` precision."""
    rates = [_rate("f32", 500.0, "256x16x16x256"), _rate("f32", 600.0), _rate("bf16", 700.0, ran="f32"),
             _rate("bf16", 1000.0), _rate("int8", 2000.0, "256x4x4x512")]
    rows = [_inf("keras", img_s=1000.0, compute="f32", gflop_per_image=0.3),
            _inf("openvino bf16", img_s=2000.0, compute="bf16", gflop_per_image=0.3),
            _inf("openvino int8", img_s=4000.0, compute="int8", gflop_per_image=0.3),
            _inf("onnxruntime fp16", img_s=900.0, compute=None, gflop_per_image=0.3)]
    md = _report(tmp_path, rates + rows)
    assert "| f32 | 700 | 256x8x8x512 |\n| bf16 | 1000 | 256x8x8x512 |\n| int8 | 2000 | 256x4x4x512 |" in md
    assert "| tiny | keras | – | – | – | 1000 | – | 1.00× | 300 (43% of f32) |" in md
    assert "| tiny | openvino bf16 | – | – | – | 2000 | – | 2.00× | 600 (60% of bf16) |" in md
    assert "| tiny | openvino int8 | – | – | – | 4000 | – | 4.00× | 1200 (60% of int8) |" in md
    assert "| tiny | onnxruntime fp16 | – | – | – | 900 | – | 0.90× | 270 |" in md
    # the goals say what they would take of the rate: 8 x 300 GFLOP/s = 2400 = 120% of the int8 rate
    assert ("| tiny: best int8 runtime ≥ 8× Keras at batch 256 (on a CPU with AMX) | 4.00× (openvino int8; "
            "8× Keras would be 120% of this CPU's int8 conv rate) | **no** |") in md
    assert "(openvino bf16; 5× Keras would be 150% of this CPU's bf16 conv rate) | **no** |" in md
    (tmp_path / "only-rates.json").write_text(json.dumps({"benchmarks": rates}))  # rates alone make a report
    assert report.main([str(tmp_path / "only-rates.json"), "--out", str(tmp_path / "r")]) == 0


def test_inference_rows_name_what_their_convolutions_compute_in():
    from bench.test_inference import compute_precision
    assert compute_precision("keras", {}) == "f32"
    assert compute_precision("onnxruntime int8", {"model_precision": "int8"}) == "int8"
    assert compute_precision("onnxruntime int8 trt-form", {}) == "f32"  # float operations between Q/DQ pairs
    assert compute_precision("onnxruntime fp16", {}) is None
    assert compute_precision("openvino int8", {"openvino_inference_precision": "f32"}) == "int8"
    assert compute_precision("openvino bf16", {"openvino_inference_precision": "bf16"}) == "bf16"
    assert compute_precision("openvino bf16", {"openvino_inference_precision": "f32"}) == "f32"  # no bf16 on the CPU


def test_speedup_ablation_table_sets_each_row_against_the_fastest_in_minutes(tmp_path):
    def row(config, img_s, precision="mixed_bfloat16", xla=False):
        b = _bench(config, img_s, xla=xla)
        b["extra_info"].update(model="airbench-muon speedups", batch=2000, precision=precision, run_images=400_000)
        return b
    md = _report(tmp_path, [row("loop fp32 spc10", 625.0, "float32"), row("loop amp spc10", 1000.0),
                            row("loop amp spc10 -fused-bn", 800.0), row("loop xla spc10", 400.0, "float32", True)])
    table = md[md.index("airbench-muon speedups: each speed-up switched off alone"):]
    assert "(batch 2000); minutes: the recipe's 400,000 training images at the row's rate" in table
    lines = [x for x in table.splitlines() if x.startswith("| loop")]
    assert lines == ["| loop amp spc10 | mixed_bfloat16 | off | 1000.0 | 1.00× | 6.7 |",
                     "| loop amp spc10 -fused-bn | mixed_bfloat16 | off | 800.0 | 1.25× | 8.3 |",
                     "| loop fp32 spc10 | float32 | off | 625.0 | 1.60× | 10.7 |",
                     "| loop xla spc10 | float32 | on | 400.0 | 2.50× | 16.7 |"]


def test_flops_are_counted_from_the_layers():
    """A conv, a frozen-first layout and a dense head, against the formula written out."""
    import keras

    from bench.flops import forward_flops, train_flops
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="frozen")(inputs)        # 2*8*8*3*3*3*4
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same")(x)                  # 2*4*4*3*3*4*6
    y = keras.layers.Dense(10)(keras.layers.Flatten()(x))                         # 2*96*10
    model = keras.Model(inputs, y)
    model.get_layer("frozen").trainable = False
    conv1, conv2, dense = 2 * 64 * 27 * 4, 2 * 16 * 36 * 6, 2 * 96 * 10
    assert forward_flops(model) == conv1 + conv2 + dense
    assert train_flops(model) == conv1 + 3 * (conv2 + dense)  # the frozen first layer: forward only
