"""Ready ``reshape_transform=`` callables: a transformer layer's tokens as the ``(B, N, h, w)`` feature map ``A``.

Every explainer takes ``reshape_transform=`` with pytorch-grad-cam's signature (a callable from the target layer's
output to ``(B, C, h, w)``), so a transform written for grad-cam works here unchanged. SFAM then pools, weights and
sums the grid exactly as a CNN's feature map (Eq. 1-3); gradient methods apply the same transform to the gradients.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_int


def vit_tokens_to_grid(tokens: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """A ViT layer's ``(B, T, D)`` tokens as a ``(B, D, h, w)`` feature map, ``h = w = sqrt(T - num_prefix_tokens)``.

    The first ``num_prefix_tokens`` tokens (the class token; with register tokens, ``1 + registers``; 0 for a ViT
    without a class token) belong to no image patch and are dropped; the remaining patch tokens are in row-major
    order (torchvision's ``vit_b_16``, timm's ViTs), so token ``num_prefix_tokens + i·w + j`` is the patch in row
    ``i``, column ``j``: ``grid[b, d, i, j] = tokens[b, num_prefix_tokens + i·w + j, d]``.

    Use it as ``SFAM(vit, vit.encoder.layers[-1], metric="cosine", reshape_transform=vit_tokens_to_grid)``; for
    another prefix, ``reshape_transform=lambda t: vit_tokens_to_grid(t, num_prefix_tokens=5)``. Gradient methods
    (CG-RAM) need a layer whose patch tokens reach the output: the last block's patch outputs do not (only the class
    token is read after it), so take a layer the class token attends to, e.g. ``vit.encoder.layers[-1].ln_1``.
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of shape (B, T, D), got {type(tokens).__name__}; this "
                        "transform reads a transformer layer's output (choose a target layer that returns a tensor).")
    prefix = check_int(num_prefix_tokens, "num_prefix_tokens", minimum=0)
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, T, D) (batch, tokens, width), got shape {tuple(tokens.shape)}; "
                         "vit_tokens_to_grid is for a transformer layer's output (a CNN layer's (B, N, H, W) output "
                         "needs no reshape_transform).")
    b, t, d = tokens.shape
    patches = t - prefix
    side = math.isqrt(max(patches, 0))
    if patches < 1 or side * side != patches:
        raise ValueError(f"tokens hold T = {t} tokens; after dropping num_prefix_tokens={prefix}, {patches} patch "
                         f"tokens are not a square grid (h = w = sqrt(T - num_prefix_tokens)). Set num_prefix_tokens "
                         "to the number of class and register tokens before the patches (1 for torchvision's "
                         "vit_b_16, 0 without a class token), or, for a non-square grid, pass your own "
                         "reshape_transform, e.g. lambda t: t[:, 1:].reshape(B, h, w, D).permute(0, 3, 1, 2).")
    return tokens[:, prefix:].reshape(b, side, side, d).permute(0, 3, 1, 2)
