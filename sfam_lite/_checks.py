"""Input validation shared by the package: every check raises with a message that names the problem."""
from __future__ import annotations

import torch


def as_float_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a floating-point tensor, or raise ``TypeError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        f"convert it with torch.as_tensor({name}).")
    if x.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}.")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity."""
    # A NaN or infinity makes the sum non-finite, so a finite sum proves every value finite, at a fraction of
    # the cost of an elementwise test; only a non-finite sum (possibly an overflow of finite values) is looked at.
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); "
                         f"SFAM needs finite features. Check the model's input and weights.")


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
