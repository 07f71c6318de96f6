import sys, re, collections
rows = collections.defaultdict(lambda: [0, 0.0])
for line in open(sys.argv[1]):
    if not line.startswith("onednn_verbose,v1,primitive,exec"): continue
    p = line.rstrip().split(",")
    kind, impl, prop, mds, prob, t = p[5], p[6], p[7], p[8], p[-2], float(p[-1])
    dt = re.findall(r"(src|wei|dst|diff_src|diff_dst|diff_weights):(\w+)", mds)
    dts = "/".join(sorted(set(d for _, d in dt)))
    rows[(kind, impl, prop, dts, prob)][0] += 1
    rows[(kind, impl, prop, dts, prob)][1] += t
tot = sum(v[1] for v in rows.values())
bykind = collections.Counter()
for k, v in rows.items(): bykind[k[0]] += v[1]
print("total ms", round(tot), {k: f"{v/tot:.1%}" for k, v in bykind.most_common()})
def flops(prob):
    m = re.match(r"mb(\d+)_ic(\d+)oc(\d+)_ih(\d+)oh(\d+)kh(\d+)\w*?_iw(\d+)ow(\d+)kw(\d+)", prob)
    if not m: return None
    mb, ic, oc, ih, oh, kh, iw, ow, kw = map(int, m.groups())
    return 2 * mb * ic * oc * oh * ow * kh * kw
for k, v in sorted(rows.items(), key=lambda kv: -kv[1][1])[:int(sys.argv[2]) if len(sys.argv) > 2 else 30]:
    f = flops(k[4]) if k[0] == "convolution" else None
    g = f" {f * v[0] / (v[1] / 1e3) / 1e9:7.0f} GF/s" if f else ""
    print(f"{v[1]/tot:6.1%} {v[1]:8.1f}ms n={v[0]:3d} {k[0][:6]} {k[1][:45]:45s} {k[2][:16]:16s} {k[3]:10s} {k[4][:70]}{g}")
