"""A slider that works in a static page: pre-rendered frames and a few lines of inline JavaScript.

In the rendered book no kernel runs a widget's callbacks, so an ``ipywidgets`` slider there is dead.
:func:`static_slider` renders every position of the slider beforehand (one image per value, e.g. one per
threshold of the localisation protocol, §4.3 of the paper) and returns one self-contained HTML snippet:
the frames as PNG ``data:`` URIs, a range input and a small script that swaps the image and a text read-out
when the range moves. Nothing is fetched from a network or a CDN, so it works in the static HTML of the book
(myst-nb writes ``text/html`` outputs into the page as they are), in Jupyter and in Colab.

The snippet's structure is a contract (the book's browser test relies on it)::

    <div class="sfam-slider" id="sfam-slider-…">
      <img …>                                    src: the frame of the current value
      <input type="range" min="0" max="n-1" …>   the index of the value
      <span class="sfam-slider-readout">…</span> the read-out of the current value
      <script>…</script>                         reacts to the range's "input" and "change" events
    </div>

Every call gets element ids of its own, so several sliders on one page work independently; the ids are
derived from the content and a per-process call counter, so the same calls in a fresh kernel give the same
HTML byte for byte (the book checks committed outputs against a fresh run).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["StaticSlider", "static_slider", "encode_png"]

#: Snippets larger than this are refused unless ``max_bytes`` is raised: the book keeps each page under 2 MB.
DEFAULT_MAX_BYTES = 1_000_000

_calls = itertools.count(1)


@dataclass(frozen=True)
class StaticSlider:
    """The HTML of one static slider; notebooks display it as ``text/html`` (``_repr_html_``).

    Attributes:
        html: the self-contained snippet (no external references).
        n_frames: the number of slider positions.
        n_images: the number of distinct encoded images (identical frames are stored once).
        frame_size: ``(height, width)`` of the frames in pixels.
    """
    html: str
    n_frames: int
    n_images: int
    frame_size: tuple[int, int]

    @property
    def size_bytes(self) -> int:
        """The snippet's size in bytes (UTF-8), as it is stored in the notebook and in the page."""
        return len(self.html.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        h, w = self.frame_size
        return (f"StaticSlider({self.n_frames} positions, {self.n_images} distinct frames of {w}x{h} px, "
                f"{self.size_bytes / 1000:.1f} kB)")

    def page(self, title: str = "slider") -> str:
        """A complete HTML document holding only this slider (to open in a browser or test)."""
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
                f"<body>\n{self.html}\n</body></html>\n")


def _as_rgb_array(frame, index: int) -> np.ndarray:
    """A frame as an ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 array."""
    from PIL import Image
    if isinstance(frame, Image.Image):
        if frame.mode not in ("L", "RGB", "RGBA"):
            frame = frame.convert("RGBA" if "A" in frame.getbands() else "RGB")
        return np.asarray(frame)
    try:
        arr = np.asarray(frame)
    except Exception as exc:      # e.g. a ragged list
        raise TypeError(f"frame {index} is not an image: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise TypeError(f"frame {index} must be a numeric (H, W), (H, W, 3) or (H, W, 4) array, a PIL image or "
                        f"encoded PNG/JPEG bytes; got {type(frame).__name__} of dtype {arr.dtype}.")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise ValueError(f"frame {index} has shape {arr.shape}; give (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA "
                         "pixels (channels last).")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:        # a mask: white where True (as uint8 0/1 it would be a black frame)
        return np.where(arr, np.uint8(255), np.uint8(0))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"frame {index} holds NaN or infinite values.")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"frame {index} is a float array with values in [{arr.min():.3g}, {arr.max():.3g}]; "
                             "float frames must lie in [0, 1] (or pass uint8 in 0..255).")
        return np.round(arr * 255).astype(np.uint8)
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"frame {index} is an integer array with values outside 0..255.")
    return arr.astype(np.uint8)


def shared_palette(frames: list[np.ndarray], colors: int):
    """One palette of at most ``colors`` colours for all of ``frames`` (uint8 ``(H, W, 3)`` arrays): PIL's median cut
    on the frames stacked into one image, so that a pixel that is the same in every frame gets the same colour in
    every frame (a slider's unchanged panels do not flicker as it moves). A ``"P"`` image to give to
    :func:`encode_png`."""
    from PIL import Image
    rgb = [f for f in frames if f.ndim == 3 and f.shape[2] == 3]
    stacked = Image.fromarray(np.concatenate([f.reshape(-1, 1, 3) for f in rgb]), "RGB")
    return stacked.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def encode_png(pixels: np.ndarray, colors: int | None = None, palette=None) -> bytes:
    """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array, as small as PIL makes them.

    ``colors=None`` is lossless: a frame with at most 256 distinct colours is stored with an exact palette
    (1 byte per pixel), any other frame as RGB(A). ``colors=n`` (2..256) reduces the frame to at most ``n``
    colours (PIL's median cut, no dithering: deterministic), which is lossy but much smaller for photographs
    under a heat map. ``palette`` (from :func:`shared_palette`) reduces to that palette instead of the frame's own."""
    from PIL import Image
    if colors is not None:
        if isinstance(colors, bool) or not isinstance(colors, numbers.Integral) or not 2 <= colors <= 256:
            raise ValueError(f"colors must be None (lossless) or an integer in 2..256, got {colors!r}.")
    if pixels.ndim == 2:
        image = Image.fromarray(pixels, "L")
    else:
        codes = None
        if pixels.shape[2] == 3:       # exact palette when there are few colours (lossless, one byte per pixel)
            flat = pixels.reshape(-1, 3).astype(np.uint32)
            codes, index = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2], return_inverse=True)
        if codes is not None and len(codes) <= 256:
            image = Image.fromarray(index.reshape(pixels.shape[:2]).astype(np.uint8), "P")
            palette = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)
            image.putpalette(palette.ravel().tolist())
        else:
            image = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
            if palette is not None and image.mode == "RGB":
                image = image.quantize(palette=palette, dither=Image.Dither.NONE)
            elif colors is not None and image.mode == "RGB":
                image = image.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _encoded(frame, index: int, colors, palette=None) -> tuple[str, tuple[int, int]]:
    """``(mime type, size)`` and base64 text of one frame."""
    from PIL import Image
    if isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            mime = "image/png"
        elif data.startswith(b"\xff\xd8\xff"):
            mime = "image/jpeg"
        else:
            raise ValueError(f"frame {index} is bytes but neither PNG nor JPEG; pass pixels or encoded PNG/JPEG.")
        try:
            with Image.open(io.BytesIO(data)) as im:
                size = (im.height, im.width)
        except Exception as exc:
            raise ValueError(f"frame {index}: the encoded image does not decode ({exc}).") from None
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", size
    pixels = _as_rgb_array(frame, index)
    png = encode_png(pixels, colors, palette)
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}", tuple(pixels.shape[:2])


def _check_values(values, n: int) -> list[float]:
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"values must be a sequence of numbers, one per frame, got {type(values).__name__}.") from None
    if len(values) != n:
        raise ValueError(f"{n} frames but {len(values)} values; give exactly one value per frame.")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"values[{i}] = {v!r} is not a finite number.")
        out.append(float(v))
    bad = [i for i in range(1, n) if not out[i] > out[i - 1]]
    if bad:
        i = bad[0]
        raise ValueError(f"values must increase strictly (the range moves from the first to the last); "
                         f"values[{i - 1}] = {out[i - 1]:g} is followed by values[{i}] = {out[i]:g}.")
    return out


def _script_json(obj) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no HTML comment openers)."""
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def static_slider(frames, values, label: str = "value", readouts=None, value_format: str = "{:.2f}",
                  start: int = 0, title: str | None = None, scale: float = 1.0, colors: int | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> StaticSlider:
    """One self-contained HTML slider over pre-rendered ``frames``, one per value in ``values``.

    Args:
        frames: images, all of the same size: uint8 or [0, 1] float arrays ``(H, W)``, ``(H, W, 3)`` or
            ``(H, W, 4)``; PIL images; or encoded PNG/JPEG bytes (used as they are).
        values: the slider's values, strictly increasing, one per frame (e.g. thresholds 0.05 … 0.95).
        label: what the values are, e.g. ``"threshold"``; names the range for screen readers.
        readouts: the text shown beside the slider for each value (e.g. ``"threshold 0.35 — IoU 0.62"``);
            default ``"<label> <value>"`` with ``value_format``.
        start: the index of the value shown first.
        title: an optional caption above the image (plain text, escaped).
        scale: display size relative to the frames' pixels (the image is drawn with crisp pixels).
        colors: ``None`` encodes frames losslessly; an integer 2..256 reduces them to one palette of at most that
            many colours shared by every frame (:func:`shared_palette`, :func:`encode_png`).
        max_bytes: refuse a snippet larger than this (it is stored in the notebook and in the page).

    Identical frames are stored once. Returns a :class:`StaticSlider` (display it, or read ``.html``).
    """
    if isinstance(frames, (bytes, str)) or not hasattr(frames, "__len__"):
        raise TypeError(f"frames must be a sequence of images (a list), got {type(frames).__name__}.")
    n = len(frames)
    if n == 0:
        raise ValueError("frames is empty; a slider needs at least one frame.")
    values = _check_values(values, n)
    if not isinstance(label, str):
        raise TypeError(f"label must be a string, got {type(label).__name__}.")
    if readouts is None:
        if not isinstance(value_format, str):
            raise TypeError(f"value_format must be a format string such as '{{:.2f}}', got {type(value_format).__name__}.")
        try:
            readouts = [f"{label} {value_format.format(v)}" for v in values]
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(f"value_format {value_format!r} cannot format the value {values[0]!r} ({exc}); give a "
                             "format string with one positional field, such as '{:.2f}'.") from None
    else:
        readouts = list(readouts)
        if len(readouts) != n:
            raise ValueError(f"{n} frames but {len(readouts)} readouts; give one read-out text per frame.")
        if not all(isinstance(r, str) for r in readouts):
            raise TypeError("readouts must be strings, one per frame.")
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or not 0 <= start < n:
        raise ValueError(f"start must be a frame index in 0..{n - 1}, got {start!r}.")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale <= 16:
        raise ValueError(f"scale must be a number in (0, 16], got {scale!r}.")

    sources, order, size = [], [], None
    seen: dict[str, int] = {}
    palette = None
    if colors is not None:         # one palette for every frame: what does not change between frames stays put
        pixels = [_as_rgb_array(f, i) for i, f in enumerate(frames) if not isinstance(f, (bytes, bytearray, memoryview))]
        if any(p.ndim == 3 and p.shape[2] == 3 for p in pixels):
            palette = shared_palette(pixels, colors)
    for i, frame in enumerate(frames):
        uri, frame_size = _encoded(frame, i, colors, palette)
        if size is None:
            size = frame_size
        elif frame_size != size:
            raise ValueError(f"frame {i} is {frame_size[1]}x{frame_size[0]} px but frame 0 is {size[1]}x{size[0]}; "
                             "all frames must have the same size.")
        if uri not in seen:
            seen[uri] = len(sources)
            sources.append(uri)
        order.append(seen[uri])

    digest = hashlib.sha256(_script_json([sources, order, readouts, values, label, title]).encode()).hexdigest()[:10]
    uid = f"sfam-slider-{digest}-{next(_calls)}"
    h, w = size
    width = round(w * float(scale))
    caption = f'<div class="sfam-slider-title" style="margin-bottom:4px">{html.escape(title)}</div>' if title else ""
    snippet = (
        f'<div class="sfam-slider" id="{uid}" style="margin:0.5em 0">'
        f"{caption}"
        f'<img id="{uid}-img" src="{sources[order[start]]}" width="{width}" '
        f'alt="{html.escape(f"{label} {value_format.format(values[start])}")}" '
        f'style="display:block;max-width:100%;height:auto;image-rendering:pixelated">'
        f'<div style="display:flex;align-items:center;gap:0.8em;flex-wrap:wrap;margin-top:4px">'
        f'<input type="range" id="{uid}-range" min="0" max="{n - 1}" step="1" value="{start}" '
        f'aria-label="{html.escape(label)}" style="width:min(100%,{max(width, 240)}px)">'
        f'<span class="sfam-slider-readout" id="{uid}-readout" style="font-family:monospace">'
        f"{html.escape(readouts[start])}</span></div>"
        "<script>(function(){"
        f'var r=document.getElementById("{uid}-range"),i=document.getElementById("{uid}-img"),'
        f'o=document.getElementById("{uid}-readout");if(!r||!i||!o)return;'
        f"var s={_script_json(sources)},f={_script_json(order)},t={_script_json(readouts)},"
        f"a={_script_json([f'{label} {value_format.format(v)}' for v in values])};"
        "function u(){var k=Math.max(0,Math.min(f.length-1,parseInt(r.value,10)||0));"
        "i.src=s[f[k]];i.alt=a[k];o.textContent=t[k];}"
        'r.addEventListener("input",u);r.addEventListener("change",u);u();'
        "})();</script></div>")
    out = StaticSlider(snippet, n, len(sources), size)
    if out.size_bytes > max_bytes:
        raise ValueError(f"the slider's HTML is {out.size_bytes / 1e6:.2f} MB, above max_bytes = "
                         f"{max_bytes / 1e6:.2f} MB; use fewer or smaller frames, colors=64, or raise max_bytes.")
    return out
