"""GPW / multi-similarity loss (Wang et al., CVPR 2019): a retrieval embedding compared by cosine similarity.

The embedding is a torchvision ResNet up to global average pooling, ``Linear → dim`` and L2
normalisation. The MS-loss reference implementation keeps every BatchNorm in eval mode while it trains (its
running statistics frozen, its affine parameters trained): ``freeze_bn="stats"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .staged import STAGES, Staged, stage_index


def _resnet(arch: str, weights) -> torchvision.models.ResNet:
    """A torchvision ResNet by name; ``"resnet10"`` is torchvision's ``ResNet`` with one BasicBlock per stage
    (half of ResNet-18's blocks, the same widths and strides), which torchvision does not name."""
    if arch == "resnet10":
        if weights is not None:
            raise ValueError("resnet10 has no pretrained weights in torchvision; use weights=None or resnet18/50.")
        return torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    if not arch.startswith("resnet") or not hasattr(torchvision.models, arch):
        raise ValueError(f"unknown arch {arch!r}: use resnet10 or a torchvision ResNet name (resnet18, resnet50, ...).")
    return getattr(torchvision.models, arch)(weights=weights)


class GPWEmbedding(Staged, nn.Module):
    """``arch`` is a torchvision ResNet name. ``last_stride=1`` removes the stride of the last stage
    (total stride 32 → 16, the "last stride" trick of re-identification models), so that small CPU-sized
    inputs still give a usable final feature map: 80 px → 5×5.
    ``freeze_bn="stats"`` keeps every BatchNorm's running statistics frozen and trains its affine parameters, as
    MS loss does with an ImageNet-pretrained backbone; ``True`` freezes the affine parameters too; a backbone
    trained from scratch needs its BatchNorm to learn (``freeze_bn=False``), or it has no normalisation."""

    def __init__(self, arch: str = "resnet50", dim: int = 512, weights=None, last_stride: int = 2,
                 freeze_bn: bool | str = "stats"):
        super().__init__()
        backbone = _resnet(arch, weights)
        if last_stride != 2:
            block = backbone.layer4[0]
            first_conv = block.conv2 if hasattr(block, "conv3") else block.conv1   # Bottleneck strides in conv2
            first_conv.stride = block.downsample[0].stride = (last_stride, last_stride)
        self.channels = backbone.fc.in_features
        backbone.fc = nn.Identity()
        backbone.avgpool = nn.AdaptiveAvgPool2d(1)
        self.backbone = backbone
        self.embed = nn.Linear(self.channels, dim)
        if not (isinstance(freeze_bn, bool) or freeze_bn == "stats"):
            raise ValueError(f"freeze_bn must be True, False or 'stats', got {freeze_bn!r}.")
        self.freeze_bn = freeze_bn
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d) and freeze_bn is True:
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)

    # -- what an explainer needs to know (read by sfam_lite.methods.ModelSetup) --
    #: the decision GPW makes: the most cosine-similar other image (sfam_lite.evaluation.decisions)
    task = "retrieval"
    #: the similarity SFAM's CIS uses for it
    metric = "cosine"

    def stage_owner(self) -> nn.Module:
        """The torchvision ResNet, whose four stages are the stages; the last convolutional one is explained."""
        return self.backbone

    def head_after(self, layer: str = "layer4") -> nn.Module:
        """The layers after ``layer`` up to the *raw* embedding (before the L2 normalisation, as Grad-FAM needs):
        the later stages, pooling and ``embed``. Gradient explainers run it on cached feature maps."""
        return nn.Sequential(*self.stages_after(layer), self.backbone.avgpool, nn.Flatten(1), self.embed)

    def projection_after(self, layer: str = "layer4") -> nn.Module | None:
        """The linear neck that maps ``layer``'s pooled features to the embedding (Decomposition decomposes through
        it): ``embed`` after the last stage; None after an earlier one, where non-linear stages follow."""
        return self.embed if stage_index(layer) == len(STAGES) - 1 else None

    def embedding_head(self) -> nn.Module:
        """:meth:`head_after` the target layer."""
        return self.head_after(self.target_stage)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d) and self.freeze_bn:
                m.eval()  # frozen BatchNorm: running statistics never update
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.backbone(images)), dim=-1)


def multi_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 40.0,
                          lam: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """MS loss with hard-pair mining, for L2-normalised ``embeddings`` ``(B, d)`` and ``labels`` ``(B,)``.

    For anchor i with similarities ``S_ik``: a negative is kept if ``S_ik + margin > min`` positive similarity,
    a positive if ``S_ik - margin < max`` negative similarity; then
    ``(1/α) log(1 + Σ_pos exp(-α(S_ik - λ))) + (1/β) log(1 + Σ_neg exp(β(S_ik - λ)))``.
    Anchors left without a kept positive or negative contribute zero; the sum is divided by B.
    """
    sim = embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
    min_pos = torch.where(pos, sim, inf).amin(1, keepdim=True)
    max_neg = torch.where(neg, sim, -inf).amax(1, keepdim=True)
    keep_neg = neg & (sim + margin > min_pos)
    keep_pos = pos & (sim - margin < max_neg)
    zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
    pos_term = torch.where(keep_pos, torch.exp(-alpha * (sim - lam)), zero).sum(1)
    neg_term = torch.where(keep_neg, torch.exp(beta * (sim - lam)), zero).sum(1)
    per_anchor = torch.log1p(pos_term) / alpha + torch.log1p(neg_term) / beta
    valid = keep_pos.any(1) & keep_neg.any(1)
    return torch.where(valid, per_anchor, zero).sum() / len(labels)
