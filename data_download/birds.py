"""The synthetic benchmark's birds: the palette, the parts that define a class, the genus structure
(:func:`class_specs`) and the bird's polygons (:func:`bird_parts`).

A bird faces +x in local units (body semi-axes 1 × 0.6); every part is a polygon, so the box of the
drawn bird is the box of its vertices.
"""
from __future__ import annotations

import functools
import math

import numpy as np

#: Bird colours (RGB).
PALETTE = {
    "black": (32, 30, 30), "white": (236, 234, 228), "grey": (140, 140, 138), "brown": (118, 80, 46),
    "rust": (172, 78, 36), "red": (204, 34, 40), "orange": (238, 132, 32), "yellow": (236, 206, 44),
    "olive": (122, 128, 52), "green": (58, 142, 62), "blue": (46, 88, 194), "teal": (36, 150, 160),
    "buff": (212, 182, 132),
}
COLOURS = tuple(PALETTE)
PATTERNS = ("plain", "bars", "spots", "stripe", "tipped")
TAILS = ("short", "long", "forked", "fan")
BEAKS = tuple(f"{c}_{s}" for s in ("cone", "long", "hooked") for c in ("dark", "yellow", "orange"))
MARKS = ("none", "black_cap", "red_cap", "crest", "eye_stripe", "eye_ring")
#: The parts that define a class, and the values each can take.
ATTRIBUTES = {"body": COLOURS, "belly": COLOURS, "head": COLOURS, "wing": COLOURS, "pattern": PATTERNS,
              "tail": TAILS, "beak": BEAKS, "mark": MARKS}
GENUS_SIZE = 8
GENERA = ("Ambrel", "Brisk", "Corvel", "Dunnet", "Emmer", "Fallin", "Garrow", "Hollet", "Istra", "Jessel",
          "Korrin", "Lumet", "Marlow", "Nettin", "Orvel", "Pellin", "Quessa", "Rindle", "Sorrel", "Tassin",
          "Umbrel", "Vessin", "Wrennet", "Yarrow", "Zillet")


def class_specs(num_classes: int = 200, seed: int = 0) -> list[dict]:
    """The class definitions: for each class its name, genus, and one value per part of :data:`ATTRIBUTES`.

    Genus ``g`` holds classes ``8g+1 .. 8g+8``. It draws a base bird and four parts to vary; species
    ``j`` (0..7) sets part ``j % 4`` to the ``j // 4``-th of two alternative values. Returned dicts also
    say which part (``varies``) distinguishes the species from its genus' base.
    """
    rng = np.random.default_rng([seed, 0])
    names = list(ATTRIBUTES)
    specs, seen = [], set()
    for g in range(math.ceil(num_classes / GENUS_SIZE)):
        while True:
            base = {a: str(rng.choice(ATTRIBUTES[a])) for a in names}
            parts = [names[k] for k in rng.choice(len(names), 4, replace=False)]
            alts = {p: [str(v) for v in rng.choice([v for v in ATTRIBUTES[p] if v != base[p]], 2, replace=False)]
                    for p in parts}
            genus = []
            for j in range(GENUS_SIZE):
                part = parts[j % 4]
                spec = dict(base, **{part: alts[part][j // 4]})
                genus.append((spec, part))
            keys = [tuple(s[a] for a in names) for s, _ in genus]
            if len(set(keys)) == GENUS_SIZE and not seen.intersection(keys):
                seen.update(keys)
                break
        for j, (spec, part) in enumerate(genus):
            class_id = g * GENUS_SIZE + j + 1
            if class_id > num_classes:
                break
            value = spec[part].replace("_", "-")
            name = f"{value.capitalize()}_{part}_{GENERA[g % len(GENERA)]}"
            specs.append(dict(spec, class_id=class_id, name=f"{class_id:03d}.{name}", genus=g, varies=part))
    return specs


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)


def _band(cx: float, cy: float, a: float, b: float, lo: float, hi: float, axis: int, n: int = 10) -> np.ndarray:
    """The part of an axis-aligned ellipse with ``lo <= coordinate <= hi`` along ``axis`` (0: x, 1: y), as a polygon."""
    r = (a, b)[axis]
    s = np.linspace(max(lo, -r), min(hi, r), n)
    half = (b, a)[axis] * np.sqrt(np.clip(1 - (s / r) ** 2, 0, None))
    first = np.stack([s, -half], 1)
    second = np.stack([s[::-1], half[::-1]], 1)
    pts = np.concatenate([first, second])
    if axis == 1:
        pts = pts[:, ::-1]
    return pts + (cx, cy)


def _circle(cx: float, cy: float, r: float, n: int = 20) -> np.ndarray:
    return _ellipse(cx, cy, r, r, n)


BODY = (0.0, 0.0, 1.0, 0.6)          # centre x, y, semi-axes (local units; the bird faces +x)
HEAD = (0.95, -0.55, 0.42)
WING = (-0.2, -0.08, 0.78, 0.36)
EYE = (HEAD[0] + 0.16, HEAD[1] - 0.06)
TAIL_SHAPES = {
    "short": [(-0.8, -0.25), (-1.45, -0.32), (-1.5, 0.02), (-0.8, 0.15)],
    "long": [(-0.8, -0.2), (-2.05, -0.12), (-2.05, 0.06), (-0.8, 0.15)],
    "forked": [(-0.8, -0.22), (-1.95, -0.48), (-1.5, -0.04), (-1.95, 0.38), (-0.8, 0.15)],
    "fan": [(-0.8, -0.14), (-1.55, -0.62), (-1.75, -0.12), (-1.55, 0.4), (-0.8, 0.15)],
}
BEAK_SHAPES = {
    "cone": [(0.0, -0.16), (0.36, 0.0), (0.0, 0.13)],
    "long": [(0.0, -0.09), (0.8, 0.05), (0.0, 0.08)],
    "hooked": [(0.0, -0.16), (0.3, -0.13), (0.44, 0.06), (0.3, 0.0), (0.0, 0.13)],
}
BEAK_COLOURS = {"dark": (40, 38, 36), "yellow": (232, 192, 42), "orange": (226, 118, 40)}
LEG = (70, 60, 52)


def _contrast(rgb) -> tuple[int, int, int]:
    return (30, 28, 28) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 120 else (240, 238, 232)


def bird_parts(spec: dict) -> list[tuple[tuple[int, int, int], np.ndarray]]:
    """The bird as ``(colour, polygon)`` pairs in local units, back to front; polygons are ``(k, 2)`` arrays."""
    return _bird_parts(tuple(spec[a] for a in ATTRIBUTES))


@functools.lru_cache(maxsize=1024)
def _bird_parts(values: tuple[str, ...]) -> list[tuple[tuple[int, int, int], np.ndarray]]:
    spec = dict(zip(ATTRIBUTES, values))
    col = {k: PALETTE[spec[k]] for k in ("body", "belly", "head", "wing")}
    hx, hy, hr = HEAD
    parts = [
        (LEG, np.array([(0.12, 0.5), (0.2, 0.5), (0.24, 1.05), (0.16, 1.05)])),
        (LEG, np.array([(-0.22, 0.5), (-0.14, 0.5), (-0.1, 1.05), (-0.18, 1.05)])),
        (col["wing"], np.array(TAIL_SHAPES[spec["tail"]])),
        (col["body"], _ellipse(*BODY)),
        (col["belly"], _band(BODY[0] + 0.05, BODY[1] + 0.05, 0.9, 0.52, 0.0, 0.6, axis=1)),
        (col["wing"], _ellipse(*WING)),
    ]
    wx, wy, wa, wb = WING
    ink = _contrast(col["wing"])
    pattern = spec["pattern"]
    if pattern == "bars":
        parts += [(ink, _band(wx, wy, wa, wb, lo, lo + 0.13, axis=0)) for lo in (-0.05, 0.3)]
    elif pattern == "spots":
        parts += [(ink, _circle(wx + dx, wy + dy, 0.075, 10)) for dx, dy in
                  ((-0.4, 0.0), (-0.1, -0.15), (-0.1, 0.12), (0.2, -0.05), (0.45, 0.08), (0.25, 0.2))]
    elif pattern == "stripe":
        parts.append((ink, _band(wx, wy, wa, wb, -0.09, 0.09, axis=1)))
    elif pattern == "tipped":
        parts.append((ink, _band(wx, wy, wa, wb, -wa, -0.3, axis=0)))
    parts.append((col["head"], _circle(hx, hy, hr)))
    mark = spec["mark"]
    if mark in ("black_cap", "red_cap"):
        parts.append((PALETTE["black" if mark == "black_cap" else "red"], _band(hx, hy, hr, hr, -hr, -0.1, axis=1)))
    elif mark == "crest":
        parts.append((col["head"], np.array([(hx - 0.1, hy - 0.3), (hx - 0.62, hy - 0.78), (hx + 0.12, hy - 0.4)])))
    elif mark == "eye_stripe":
        parts.append(((30, 28, 28), _band(hx, hy, hr, hr, EYE[1] - 0.07, EYE[1] + 0.07, axis=1)))
    elif mark == "eye_ring":
        parts.append(((240, 238, 232), _circle(*EYE, 0.11, 14)))
    parts.append(((16, 16, 16), _circle(*EYE, 0.055, 10)))
    beak_colour, beak_shape = spec["beak"].split("_")
    beak = np.array(BEAK_SHAPES[beak_shape]) + (hx + hr * 0.92, hy + 0.02)
    parts.append((BEAK_COLOURS[beak_colour], beak))
    for _, polygon in parts:   # cached and shared between calls: nobody may edit them in place
        polygon.flags.writeable = False
    return parts
