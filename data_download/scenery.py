"""The synthetic benchmark's backgrounds: natural clutter drawn independently of the class.

A sky or foliage gradient, blurred distant foliage, stones, branches that grow as tapering random
walks with forks, leaves (mostly on the branches) and grass, in colours some of which the birds share.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .birds import _ellipse

SKIES = (((96, 146, 206), (196, 220, 236)), ((150, 158, 166), (222, 224, 222)), ((60, 84, 52), (136, 150, 90)),
         ((120, 160, 200), (232, 214, 178)))
FAR = ((70, 104, 60), (98, 120, 64), (54, 80, 50), (130, 136, 80), (150, 150, 150))
BARK = ((92, 66, 42), (110, 84, 58), (72, 58, 46), (128, 116, 100), (118, 80, 46))
LEAVES = ((58, 132, 58), (96, 144, 56), (122, 128, 52), (226, 196, 58), (170, 82, 40), (44, 100, 50))
STONES = ((140, 140, 138), (120, 116, 108), (212, 182, 132), (100, 92, 84), (170, 164, 150))


def _jitter(rng, rgb, amount: float = 14) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _branch(draw: ImageDraw.ImageDraw, rng, side: int, start, angle: float, width: float, depth: int) -> list:
    """A tapering branch as a random walk of segments, with forks; returns points where leaves may grow."""
    colour = _jitter(rng, _pick(rng, BARK))
    points, (x, y) = [], start
    for _ in range(int(rng.integers(4, 8))):
        length = side * rng.uniform(0.08, 0.18)
        angle += rng.normal(0, 0.35)
        nx, ny = x + length * math.cos(angle), y + length * math.sin(angle)
        w = max(1.0, width)
        draw.line([(x, y), (nx, ny)], fill=colour, width=int(round(w)))
        draw.ellipse([nx - w / 2, ny - w / 2, nx + w / 2, ny + w / 2], fill=colour)
        points.append((nx, ny))
        if depth > 0 and rng.random() < 0.3:
            points += _branch(draw, rng, side, (nx, ny), angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1),
                              width * 0.6, depth - 1)
        x, y, width = nx, ny, width * 0.82
    return points


def _leaf(draw: ImageDraw.ImageDraw, rng, x: float, y: float, length: float) -> None:
    colour = _jitter(rng, _pick(rng, LEAVES), 12)
    t = rng.uniform(0, np.pi)
    outline = _ellipse(0, 0, length / 2, length / 5.5, 12)
    c, s = math.cos(t), math.sin(t)
    pts = outline @ np.array([[c, s], [-s, c]]) + (x, y)
    draw.polygon([tuple(p) for p in pts], fill=colour)
    rib = tuple(int(v * 0.75) for v in colour)
    draw.line([(x - c * length / 2, y - s * length / 2), (x + c * length / 2, y + s * length / 2)], fill=rib, width=1)


def background(rng: np.random.Generator, side: int) -> Image.Image:
    """Natural clutter at ``side`` pixels: sky/foliage gradient, blurred far foliage, branches, leaves, stones, grass."""
    top, bottom = (np.array(_jitter(rng, c, 10), float) for c in _pick(rng, SKIES))
    t = np.linspace(0, 1, side)[:, None, None]
    img = Image.fromarray(np.broadcast_to(top * (1 - t) + bottom * t, (side, side, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):                      # distant foliage, blurred below
        cx, cy = rng.uniform(0, side, 2)
        r = side * rng.uniform(0.1, 0.3)
        draw.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=_jitter(rng, _pick(rng, FAR)))
    img = img.filter(ImageFilter.GaussianBlur(side / 40))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:                                        # stones on the ground
        ground = side * rng.uniform(0.75, 0.92)
        for _ in range(int(rng.integers(1, 5))):
            cx, r = rng.uniform(0, side), side * rng.uniform(0.05, 0.14)
            t_ = np.linspace(0, 2 * np.pi, 14, endpoint=False)
            rad = r * rng.uniform(0.75, 1.15, 14)
            pts = np.stack([cx + rad * np.cos(t_), ground + 0.6 * rad * np.sin(t_)], 1)
            stone = _jitter(rng, _pick(rng, STONES), 10)
            draw.polygon([tuple(p) for p in pts], fill=stone)
            draw.ellipse([cx - r * 0.4, ground - r * 0.45, cx + r * 0.1, ground - r * 0.2],
                         fill=tuple(min(255, v + 30) for v in stone))
    tips = []
    for _ in range(int(rng.integers(1, 4))):                      # branches from the edges
        edge = int(rng.integers(4))
        u = rng.uniform(0.1, 0.9) * side
        start, angle = [((0, u), 0.0), ((side, u), np.pi), ((u, 0), np.pi / 2), ((u, side), -np.pi / 2)][edge]
        tips += _branch(draw, rng, side, start, angle + rng.normal(0, 0.4), side * rng.uniform(0.03, 0.07), 2)
    for _ in range(int(rng.integers(6, 26))):                     # leaves, mostly on branches
        if tips and rng.random() < 0.75:
            x, y = tips[int(rng.integers(len(tips)))] + rng.normal(0, side * 0.03, 2)
        else:
            x, y = rng.uniform(0, side, 2)
        _leaf(draw, rng, x, y, side * rng.uniform(0.06, 0.13))
    if rng.random() < 0.5:                                        # grass
        for _ in range(int(rng.integers(8, 30))):
            x = rng.uniform(0, side)
            h = side * rng.uniform(0.05, 0.2)
            draw.line([(x, side), (x + rng.normal(0, side * 0.02), side - h)],
                      fill=_jitter(rng, _pick(rng, LEAVES[:3])), width=max(1, side // 96))
    return img
