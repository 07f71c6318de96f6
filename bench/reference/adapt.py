"""Adapt the published airbench94 script to a CPU, changing only what a CPU needs.

    python -m bench.reference.adapt path/to/cifar10-airbench/legacy/airbench94.py airbench94_cpu.py --seed 1

The changes: tensors on the CPU; float32 where the script uses half precision; wall-clock timing in
place of CUDA events, split into whitening + training, the per-epoch test evaluation and the final
TTA pass (one `timer:` line at the end); torchvision's `Normalize` written out (the same arithmetic:
torchvision is not needed); `torch.manual_seed(SEED)` before the net is built; one run instead of
25. The method (net, whitening, optimizer, schedule, lookahead, augmentation, TTA) is untouched.
Every change must match the script exactly as often as expected, so a different version of it is
refused instead of half-adapted.
"""
from __future__ import annotations

import argparse
import sys

CPU_EVENT = '''class CpuEvent:
    """A wall-clock timer with the interface of the CUDA event it replaces."""
    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, other):
        return 1e3 * (other.t - self.t)


class CifarLoader:'''

# (what the published script has, what the CPU version has instead, how often it occurs)
CHANGES = [
    ("import torchvision\n", "", 1),
    ("import torchvision.transforms as T\n", "import time\n", 1),
    ("map_location=torch.device(gpu)", "map_location='cpu'", 1),
    ("self.images.half()", "self.images.float()", 1),
    ("self.normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)",
     "self.normalize = lambda x: (x - CIFAR_MEAN.view(1, 3, 1, 1)) / CIFAR_STD.view(1, 3, 1, 1)", 1),
    ("net = net.half().cuda()", "net = net.float()", 1),
    ("torch.cuda.Event(enable_timing=True)", "CpuEvent()", 2),
    ("torch.cuda.synchronize()", "pass", 3),
    ("class CifarLoader:", CPU_EVENT, 1),
    ("    model = make_net()\n",
     "    torch.manual_seed({seed})\n    model = make_net()\n    times = {{'per-epoch eval': 0.0}}\n", 1),
    ("        val_acc = evaluate(model, test_loader, tta_level=0)\n",
     "        times['training'] = total_time_seconds\n        _t = time.perf_counter()\n"
     "        val_acc = evaluate(model, test_loader, tta_level=0)\n"
     "        times['per-epoch eval'] += time.perf_counter() - _t\n", 1),
    ("    epoch = 'eval'\n",
     "    epoch = 'eval'\n    print(f\"timer: whitening + training {{times['training']:.1f}} s, per-epoch evaluation \"\n"
     "          f\"{{times['per-epoch eval']:.1f}} s, TTA {{total_time_seconds - times['training']:.1f}} s\", flush=True)\n", 1),
    ("range(25)", "range({runs})", 1),
]


class AdaptError(Exception):
    pass


def adapt(source: str, seed: int = 1, runs: int = 1) -> str:
    """The CPU version of the published airbench94 script's text `source`."""
    for old, new, count in CHANGES:
        found = source.count(old)
        if found != count:
            raise AdaptError(f"expected {count}x {old.strip()!r} in the script, found {found}: not the "
                             "legacy/airbench94.py this adaptation was written for")
        source = source.replace(old, new.format(seed=seed, runs=runs))
    return source


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference.adapt", description=__doc__.splitlines()[0])
    p.add_argument("upstream", help="legacy/airbench94.py of KellerJordan/cifar10-airbench")
    p.add_argument("out", help="where to write the CPU version")
    p.add_argument("--seed", type=int, default=1, help="torch.manual_seed before the net is built (default: 1)")
    p.add_argument("--runs", type=int, default=1, help="runs in one process (the script's own default: 25)")
    a = p.parse_args(argv)
    try:
        with open(a.upstream) as f:
            text = adapt(f.read(), a.seed, a.runs)
    except (OSError, AdaptError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
