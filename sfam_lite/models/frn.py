"""FRN: few-shot classification by feature-map reconstruction (Wertheimer et al., CVPR 2021).

The backbone and head follow FRN's reference code so that the official CUB checkpoints load with
``strict=True``: ``feature_extractor.layer{1..4}.0.*`` for the ResNet-12, ``r`` = (α, β) and
``scale`` for the head (98 keys at full width).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .staged import Staged, stage_index

FULL_WIDTHS = (64, 160, 320, 640)


class Block(nn.Module):
    """ResNet-12 block: 3 × (conv3×3 without bias + BN), LeakyReLU(0.1) after the first two, a 1×1 conv + BN
    shortcut, the sum, LeakyReLU(0.1), then 2×2 max pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv3 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.relu(out + self.downsample(x)))


class ResNet12(nn.Module):
    """Four blocks of widths ``FULL_WIDTHS × width``, no stem: 84×84 input → (C, 5, 5)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        widths = [max(1, round(c * width)) for c in FULL_WIDTHS]
        self.channels = widths[-1]
        c_in = 3
        for i, c_out in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(Block(c_in, c_out)))
            c_in = c_out
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def reconstruction_distance(query: torch.Tensor, support: torch.Tensor, alpha: torch.Tensor,
                            beta: torch.Tensor) -> torch.Tensor:
    """FRN's ridge-regression reconstruction distance, in the d×d (Woodbury) form.

    ``query`` is ``(..., M, d)`` (query feature vectors, one per spatial position), ``support`` is
    ``(..., way, s, d)`` (each class's pooled support positions, ``s = shot·r``); leading dimensions
    (e.g. episodes) broadcast. Each class reconstructs every query row as ``Q̄ = ρ Q (SᵀS + λI)⁻¹ SᵀS``
    with ``λ = (s/d)·exp(α) + 1e-6`` and ``ρ = exp(β)``. Returns squared reconstruction errors ``(..., M, way)``.
    """
    s, d = support.shape[-2:]
    lam = (s / d) * alpha.exp() + 1e-6
    rho = beta.exp()
    gram = support.transpose(-1, -2) @ support                                   # (..., way, d, d)
    eye = torch.eye(d, dtype=support.dtype, device=support.device)
    projection = _solve_spd(gram + lam * eye, gram)                              # (SᵀS + λI)⁻¹ SᵀS
    residual = rho * (query.unsqueeze(-3) @ projection) - query.unsqueeze(-3)    # (..., way, M, d)
    return residual.square().sum(-1).transpose(-1, -2)


def _solve_spd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a⁻¹ b`` for symmetric positive-definite ``a`` by Cholesky, falling back to LU where the factorisation
    fails in floating point (why not LU first: benchmarks/README.md)."""
    chol, info = torch.linalg.cholesky_ex(a)
    if bool((info == 0).all()):
        return torch.cholesky_solve(b, chol)
    return torch.linalg.solve(a, b)


class FRN(Staged, nn.Module):
    """ResNet-12 + reconstruction head. ``forward`` maps images to the (B, C, 5, 5) feature map;
    :meth:`logits` scores queries against an episode's support set."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.feature_extractor = ResNet12(width)
        self.channels = self.feature_extractor.channels
        self.scale = nn.Parameter(torch.tensor([1.0]))
        self.r = nn.Parameter(torch.zeros(2))

    # -- what an explainer needs to know (read by sfam_lite.methods.ModelSetup) --
    #: the decision FRN makes: the class of an N-way K-shot episode (sfam_lite.evaluation.decisions)
    task = "few-shot"
    #: the similarity SFAM's CIS uses for it: minus a reconstruction distance between positions, Euclidean
    metric = "euclidean"

    def stage_owner(self) -> nn.Module:
        """The ResNet-12, whose four blocks are the stages; the last is the feature map the head reads."""
        return self.feature_extractor

    def head_after(self, layer: str = "layer4") -> nn.Module:
        """The blocks after ``layer``: its feature map → the feature map FRN's head reads (identity at layer4)."""
        after = self.stages_after(layer)
        return nn.Sequential(*after) if after else nn.Identity()

    def projection_after(self, layer: str = "layer4") -> None:
        """FRN has no linear neck (what Decomposition decomposes): None at every layer."""
        stage_index(layer)
        return None

    def pair_score(self, query_output: torch.Tensor, support_output: torch.Tensor) -> torch.Tensor:
        """FRN's own score of each pair, a target for gradient methods (CG-RAM's "logit" variant): the logit of the
        support's class when the pair is a 1-way episode, from the feature maps FRN outputs, query ``(B, C, h, w)``
        and support ``(B, K, C, h, w)`` → ``(B,)``."""
        b, k = support_output.shape[:2]
        q = self.read_positions(query_output)                                      # (B, r, d)
        s = self.read_positions(support_output.flatten(0, 1))                      # (B·K, r, d)
        return self.head(s.reshape(b, 1, k, *s.shape[1:]), q[:, None])[:, 0, 0]   # (B, 1 query, 1 way) → (B,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(images)

    def positions(self, images: torch.Tensor) -> torch.Tensor:
        """Feature vectors per position, scaled by 1/√C as FRN does: ``(B, H·W, C)``."""
        return self.read_positions(self(images))

    @staticmethod
    def read_positions(fmap: torch.Tensor) -> torch.Tensor:
        """How FRN reads a feature map ``(B, C, H, W)``: ``H·W`` vectors of dimension C, scaled by 1/√C."""
        return fmap.flatten(2).transpose(1, 2) / math.sqrt(fmap.shape[1])

    def head(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., Q, way)`` from position features: ``support`` ``(..., way, shot, r, d)``, ``query``
        ``(..., Q, r, d)``: minus the reconstruction distance averaged over the query's r positions, times ``scale``."""
        *lead, way, shot, r, d = support.shape
        q = query.shape[-3]
        dist = reconstruction_distance(query.reshape(*lead, q * r, d), support.reshape(*lead, way, shot * r, d),
                                       self.r[0], self.r[1])
        return -dist.reshape(*lead, q, r, way).mean(-2) * self.scale

    def logits(self, support_images: torch.Tensor, query_images: torch.Tensor) -> torch.Tensor:
        """``support_images`` ``(way, shot, 3, H, W)``, ``query_images`` ``(Q, 3, H, W)`` → logits ``(Q, way)``."""
        way, shot = support_images.shape[:2]
        support = self.positions(support_images.flatten(0, 1))
        return self.head(support.reshape(way, shot, *support.shape[1:]), self.positions(query_images))
