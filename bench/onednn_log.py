"""Where oneDNN's time goes, from its own log: a run with `ONEDNN_VERBOSE=1` prints one line per
primitive it executes; this sums them by primitive kind (share of the total), then lists the costliest
(kind, implementation, pass, data types, problem) rows with their count, time and, for convolutions,
GFLOP/s. Run the measured program with one inter-op thread so that no two primitives overlap.

    ONEDNN_VERBOSE=1 python -m engine train ... > step.log     # or any TensorFlow program
    python -m bench.onednn_log step.log [--top 30]
"""
from __future__ import annotations

import argparse
import collections
import re
import sys


def summarise(lines, top: int = 30) -> list[str]:
    rows = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        if not line.startswith("onednn_verbose,v1,primitive,exec"):
            continue
        p = line.rstrip().split(",")
        kind, impl, prop, mds, problem, ms = p[5], p[6], p[7], p[8], p[-2], float(p[-1])
        dtypes = "/".join(sorted({d for _, d in re.findall(r"(src|wei|dst|diff_src|diff_dst|diff_weights):(\w+)", mds)}))
        row = rows[(kind, impl, prop, dtypes, problem)]
        row[0] += 1
        row[1] += ms
    total = sum(v[1] for v in rows.values())
    if not total:
        return ["no 'onednn_verbose,v1,primitive,exec' lines: was ONEDNN_VERBOSE=1 set?"]
    by_kind = collections.Counter()
    for k, v in rows.items():
        by_kind[k[0]] += v[1]
    out = [f"total {total:.0f} ms: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_kind.most_common())]
    for k, (n, ms) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        flops = _conv_flops(k[4]) if k[0] == "convolution" else None
        rate = f" {flops * n / (ms / 1e3) / 1e9:7.0f} GFLOP/s" if flops else ""
        out.append(f"{ms / total:6.1%} {ms:9.1f} ms n={n:4d} {k[0][:6]} {k[1][:45]:45s} {k[2][:16]:16s} {k[3]:10s} "
                   f"{k[4][:70]}{rate}")
    return out


def _conv_flops(problem: str):
    m = re.match(r"mb(\d+)_ic(\d+)oc(\d+)_ih(\d+)oh(\d+)kh(\d+)\w*?_iw(\d+)ow(\d+)kw(\d+)", problem)
    if not m:
        return None
    mb, ic, oc, _, oh, kh, _, ow, kw = map(int, m.groups())
    return 2 * mb * ic * oc * oh * ow * kh * kw


def main(argv=None) -> list[str]:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m bench.onednn_log", description=__doc__.split("\n\n")[0])
    p.add_argument("log")
    p.add_argument("--top", type=int, default=30, help="rows listed")
    a = p.parse_args(argv)
    from bench.conftest import print_provenance
    print_provenance("bench.onednn_log", argv)
    with open(a.log, errors="replace") as f:
        out = summarise(f, a.top)
    print("\n".join(out))
    return out


if __name__ == "__main__":
    main()
