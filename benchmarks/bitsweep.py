"""Outputs of a fixed convolution sweep, saved for a bit-for-bit comparison of two builds (a
refactor must not change a bit): every CPU algorithm x pass x dtype on odd shapes (groups,
strides, dilation, an empty batch) plus algo="auto".

    python benchmarks/bitsweep.py TREE_A /tmp/a.pt; python benchmarks/bitsweep.py TREE_B /tmp/b.pt
    python -c "import torch; a, b = torch.load('/tmp/a.pt'), torch.load('/tmp/b.pt'); \
               print(all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys())"

Each TREE is a source tree with its compiled modules built in place (convkit/_cpu*.so).
"""
import sys
sys.path.insert(0, sys.argv[1])
import torch, convkit, convkit.functional as CF
assert convkit.__file__.startswith(sys.argv[1])
torch.manual_seed(0)
out = {}
shapes = [((2, 4, 9, 11), (6, 4, 3, 3), dict(padding=1)), ((1, 6, 8, 7), (6, 2, 3, 3), dict(padding=1, groups=3)),
          ((3, 3, 12, 10), (5, 3, 5, 5), dict(stride=2, padding=2)), ((2, 8, 7, 9), (4, 8, 1, 1), dict()),
          ((2, 4, 10, 9), (4, 4, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
          ((0, 4, 6, 6), (4, 4, 3, 3), dict(padding=1)), ((1, 16, 14, 14), (32, 16, 3, 3), dict(padding=1))]
for dt in (torch.float32, torch.float64):
    for i, (xs, ws, kw) in enumerate(shapes):
        x, w, b = torch.randn(xs, dtype=dt), torch.randn(ws, dtype=dt), torch.randn(ws[0], dtype=dt)
        for algo in ("direct", "im2col", "1x1", "blocked", "winograd", "auto"):
            try:
                y = CF.conv2d(x, w, b, algo=algo, **kw)
            except ValueError:
                continue
            dy = torch.randn_like(y)
            out[(str(dt), i, algo, "fwd")] = y
            out[(str(dt), i, algo, "bwd_input")] = CF.conv2d_backward_input(dy, w, xs, algo=algo, **kw)
            out[(str(dt), i, algo, "bwd_weight")] = CF.conv2d_backward_weight(dy, x, ws, algo=algo, **kw)
torch.save(out, sys.argv[2])
print(len(out), "outputs")
