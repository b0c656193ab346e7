"""Input validation shared by the package: every check raises with a message that names the problem."""
from __future__ import annotations

import math
import numbers

import torch

#: Floating dtypes whose range or precision is too small for sums over channels or pixels: reductions of such
#: tensors are computed in float32 (:func:`compute_dtype`) and the result is cast back.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def as_float_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a floating-point tensor, or raise ``TypeError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        f"convert it with torch.as_tensor({name}).")
    if x.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}.")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def check_finite(x: torch.Tensor, name: str,
                 hint: str = "SFAM needs finite features. Check the model's input and weights.") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity (``hint``: the message's last sentence)."""
    # A NaN or infinity makes the sum non-finite, so a finite sum proves every value finite, at a fraction of
    # the cost of an elementwise test; only a non-finite sum (possibly an overflow of finite values) is looked at.
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); "
                         f"{hint}")


def check_choice(value, name: str, choices):
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` naming the argument ``name``,
    the bad value and the valid choices (as torchvision's ``verify_str_arg`` does)."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}.")
    return value


def check_ndim(x: torch.Tensor, name: str, allowed: tuple[int, ...], layout: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``allowed``; ``layout`` describes the expected shape."""
    if x.ndim not in allowed:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}.")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a reduction over ``dtype`` values is computed in: float32 for float16 and bfloat16 (whose sums of
    squares overflow or lose every digit), the dtype itself otherwise."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def cast_back(x: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``x`` (computed in :func:`compute_dtype`) cast back to ``dtype``; ``ValueError`` if a finite value does not fit
    (a float16 result beyond ±65504 would silently become infinity)."""
    if x.dtype == dtype:
        return x
    out = x.to(dtype)
    if dtype in HALF_DTYPES and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} exceeds the range of {dtype} (largest |value| {x.abs().max().item():.4g}, "
                         f"{dtype} holds at most {torch.finfo(dtype).max:.4g}); compute it in float32 "
                         "(e.g. model.float(), or features.float()).")
    return out


def check_int(value, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool, not a float) ``>= minimum``; else raise
    ``TypeError`` (not an integer) or ``ValueError`` (too small)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_number(value, name: str, minimum: float | None = None, positive: bool = False,
                 maximum: float | None = None) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number (not a bool or a string) within the bounds
    (``positive``: strictly above 0; ``minimum`` / ``maximum``: inclusive); else raise ``TypeError`` or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def check_size(size, name: str = "size") -> tuple[int, int]:
    """Return ``size`` as ``(height, width)``: two positive integers (a ``torch.Size`` or a tuple of ints)."""
    try:
        size = tuple(size)
    except TypeError:
        raise TypeError(f"{name} must be two positive integers (height, width), got {size!r}.") from None
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size):
        raise ValueError(f"{name} must be two positive integers (height, width), got {size!r}.")
    return int(size[0]), int(size[1])


def check_boxes(boxes, name: str = "boxes", batch: int | None = None) -> torch.Tensor:
    """Return ``boxes`` as a floating ``(B, 4)`` tensor of ``(x, y, w, h)`` boxes with finite coordinates and
    positive width and height; ``batch``: the B they must have (one box per map). Raises ``TypeError`` or
    ``ValueError`` naming the problem."""
    boxes = as_float_tensor(boxes, name)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (B, 4), one (x, y, w, h) box per row, got shape {tuple(boxes.shape)}.")
    if batch is not None and boxes.shape[0] != batch:
        raise ValueError(f"{boxes.shape[0]} {name} for {batch} maps; give exactly one box per map.")
    check_finite(boxes, name, hint="Boxes need finite coordinates.")
    bad = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} must have positive width and height; box {i} is {boxes[i].tolist()} "
                         f"({int(bad.sum())} such box(es)). Boxes are (x, y, w, h), not (x0, y0, x1, y1).")
    return boxes


def check_device(device) -> torch.device:
    """Return ``torch.device(device)`` if it names a device this machine has; else ``ValueError``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device name; use 'cpu' or 'cuda' (or 'cuda:0', 'mps').") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA device is available here; use 'cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r}: MPS is not available here; use 'cpu'.")
    return dev


def check_threshold(threshold) -> float:
    """``threshold`` as a float in [0, 1] (a threshold on min-max normalised maps); ``TypeError``/``ValueError`` else."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number in [0, 1], got {type(threshold).__name__}.")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (the maps are min-max normalised first; the paper uses "
                         f"0.2), got {threshold}.")
    return threshold
