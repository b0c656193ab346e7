"""Plain-Python reference implementations of the paper's equations, written from the formulas
with loops over channels and no code from sfam_lite, so that tests compare two independent
computations."""
import math


def cis_loop(vq, vs):
    """Eq. 2, one channel at a time, on lists of floats."""
    n = len(vq)
    d = [(a - b) ** 2 for a, b in zip(vq, vs)]
    total = sum(d)
    return [(total - d[i]) / ((n - 1) * total) for i in range(n)]


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def cis_cosine_loop(vq, vs):
    """Eq. 5: Eq. 2 on the L2-normalised vectors."""
    return cis_loop(unit(vq), unit(vs))


def minmax_loop(w):
    """Eq. 4."""
    lo, hi = min(w), max(w)
    return [(x - lo) / (hi - lo) for x in w]


def map_loop(fmap, weights):
    """Eq. 3 on nested lists: fmap[n][i][j], weights[n]."""
    n, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    return [[sum(weights[c] * fmap[c][i][j] for c in range(n)) for j in range(w)] for i in range(h)]


def bilinear_loop(img, out_h, out_w):
    """Bilinear resampling with half-pixel centres (the align_corners=False convention), edge-clamped."""
    in_h, in_w = len(img), len(img[0])
    out = []
    for y in range(out_h):
        sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), in_h - 1)
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        row = []
        for x in range(out_w):
            sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), in_w - 1)
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = img[y0][x0] * (1 - fx) + img[y0][x1] * fx
            bottom = img[y1][x0] * (1 - fx) + img[y1][x1] * fx
            row.append(top * (1 - fy) + bottom * fy)
        out.append(row)
    return out
