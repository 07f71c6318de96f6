"""Micro-benchmarks of single kernels, each `python -m bench.micro.NAME --help`; ENGINE_BENCH_QUICK=1
(or --quick) runs each at a tiny shape in seconds, to prove it runs (bench/test_tools.py does)."""
