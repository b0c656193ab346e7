"""Training FRN (episodic) and GPW (MS loss) on images held in memory, deterministic for a seed.

    python -m sfam_lite.train frn [--config cfg.json] [--data-root DIR] [--cache DIR] [--device cuda]
    python -m sfam_lite.train gpw [--config cfg.json] [--data synthetic|cub]

(the command line is :func:`sfam_lite.cli.train_main`; the transforms are in :mod:`sfam_lite.transforms`).

Images are a uint8 tensor ``(n, 3, S, S)``; augmentation runs per image on tensors with the global
torch generator, which :func:`train_frn` and :func:`train_gpw` seed, so two runs with the same
config and data give identical weights on the same machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checks import check_choice, check_int, check_number
from .models import FRN, GPWEmbedding, multi_similarity_loss
from .sampling import BalancedBatchSampler, EpisodeSampler
from .transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform  # noqa: F401 (re-exported)

# Part of every cached model's key (sfam_lite.zoo): raise it when a change to the training code changes the
# weights a configuration produces, so that caches made before the change are not reused.
TRAINING_VERSION = 1


def lr_factor(schedule: str, warmup: int, steps: int, milestones=()):
    """The learning-rate multiplier per step: ``"constant"`` (1 after a linear warm-up of ``warmup`` steps),
    ``"cosine"`` (the same warm-up, then a half cosine from 1 down to 0 at ``steps``) or ``"step"`` (the same
    warm-up, then ×0.1 at each of ``milestones``, as the MS-loss reference's multi-step schedule)."""
    check_choice(schedule, "schedule", ("constant", "cosine", "step"))
    if schedule == "step" and not milestones:
        raise ValueError("schedule 'step' needs milestones, the steps at which the learning rate drops ×0.1, "
                         "e.g. milestones=(1200, 2400).")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return 0.1 ** sum(step >= m for m in milestones)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    return factor


def _autocast(precision: str, device: str):
    check_choice(precision, "precision", ("float32", "bfloat16"))
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _check_crop_scale(config) -> None:
    """``crop_scale`` is two numbers ``0 < lo <= hi <= 1`` (RandomResizedCrop's area range); kept as a tuple."""
    scale = config.crop_scale
    if isinstance(scale, (str, bytes)) or not hasattr(scale, "__len__") or len(scale) != 2:
        raise ValueError(f"crop_scale must be two numbers (lo, hi), got {scale!r}.")
    lo, hi = (check_number(v, "crop_scale", positive=True, maximum=1.0) for v in scale)
    if lo > hi:
        raise ValueError(f"crop_scale must be (lo, hi) with lo <= hi, got {scale!r}.")
    object.__setattr__(config, "crop_scale", tuple(scale))   # a JSON list becomes the tuple it stands for


def _check_common(config) -> None:
    """Fields FRN and GPW share: sizes, learning rate, weight decay, crops and seed."""
    check_int(config.image_size, "image_size", 8)
    check_number(config.lr, "lr", positive=True)
    check_number(config.weight_decay, "weight_decay", minimum=0.0)
    _check_crop_scale(config)
    check_int(config.seed, "seed", 0)


@dataclass(frozen=True)
class FRNConfig:
    """FRN's recipe (SGD with Nesterov momentum, step schedule, RandomResizedCrop + ColorJitter + flip,
    auxiliary loss 0.03) at a size a 2-core CPU trains in minutes. Full FRN: width 1.0, 10-way 5-shot
    15 queries, lr 0.1 cut ×0.1 every 400 of 1,200 epochs."""
    width: float = 0.25
    image_size: int = 84
    way: int = 5
    shot: int = 5
    query: int = 10
    episodes: int = 300
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple = (220,)
    gamma: float = 0.1
    aux_weight: float = 0.03
    crop_scale: tuple = (0.08, 1.0)
    seed: int = 0

    def __post_init__(self):   # refuse a bad configuration before any data is loaded
        _check_common(self)
        check_number(self.width, "width", positive=True)
        check_int(self.way, "way", 2)
        check_int(self.shot, "shot", 1)
        check_int(self.query, "query", 1)
        check_int(self.episodes, "episodes", 1)
        check_number(self.momentum, "momentum", minimum=0.0, maximum=1.0)
        check_number(self.gamma, "gamma", positive=True)
        check_number(self.aux_weight, "aux_weight", minimum=0.0)
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise TypeError(f"milestones must be a list of episode numbers, got {self.milestones!r}.")
        object.__setattr__(self, "milestones", tuple(check_int(m, "each milestone", 1) for m in self.milestones))


@dataclass(frozen=True)
class GPWConfig:
    """MS loss (α=2, β=40, λ=0.5, margin 0.1) on class-balanced batches. The real configuration is
    ResNet-50 with ImageNet weights and BatchNorm statistics frozen (``freeze_bn="stats"``), Adam lr 3e-5
    dropped ×0.1 at batches 1,200 and 2,400 of 3,000, 227 px (``sfam_lite.zoo.RECIPES["gpw-cub"]``); the CPU one a ResNet-10
    (torchvision's ResNet with one block per stage) trained from scratch (lr 1e-3 with a 50-batch warm-up
    and cosine decay, BatchNorm trained: with random weights a frozen BatchNorm normalises nothing), with
    the last stage's stride removed so that an 80 px input still gives a 5×5 final map, and crops of
    50–100 % of the image. ``benchmarks/gpw_sweep.py`` shows how these choices were measured."""
    arch: str = "resnet10"
    last_stride: int = 1
    freeze_bn: bool | str = False   # True: statistics and affine frozen; "stats": statistics only (MS loss)
    dim: int = 512
    image_size: int = 80
    classes_per_batch: int = 16
    instances: int = 5
    batches: int = 550
    lr: float = 1e-3
    weight_decay: float = 5e-4
    alpha: float = 2.0
    beta: float = 40.0
    lam: float = 0.5
    margin: float = 0.1
    crop_scale: tuple = (0.5, 1.0)
    jitter: float = 0.0
    schedule: str = "cosine"     # or "constant", or "step" (×0.1 at each of `milestones`); after a linear warm-up
    warmup: int = 50
    milestones: tuple = ()       # batches at which the "step" schedule drops the learning rate ×0.1
    precision: str = "float32"   # or "bfloat16": autocast the forward pass (CPUs with AVX512-BF16/AMX, GPUs)
    weights: str | None = None   # torchvision weights name, e.g. "IMAGENET1K_V1" (downloaded by torchvision)
    seed: int = 0

    def __post_init__(self):   # refuse a bad configuration before any data is loaded
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise TypeError(f"milestones must be a list of batch numbers, got {self.milestones!r}.")
        object.__setattr__(self, "milestones", tuple(check_int(m, "each milestone", 1) for m in self.milestones))
        lr_factor(self.schedule, self.warmup, self.batches, self.milestones)
        _autocast(self.precision, "cpu")
        check_int(self.warmup, "warmup")
        check_int(self.batches, "batches")
        if self.warmup < 0 or self.batches < 1:
            raise ValueError(f"need warmup >= 0 and batches >= 1, got warmup={self.warmup}, batches={self.batches}.")
        _check_common(self)
        if not isinstance(self.arch, str) or not (self.arch == "resnet10" or (
                self.arch.startswith("resnet") and self.arch[6:].isdigit())):
            raise ValueError(f"unknown arch {self.arch!r}: use resnet10 or a torchvision ResNet name (resnet18, resnet50, ...).")
        check_choice(self.last_stride, "last_stride", (1, 2))
        if not (isinstance(self.freeze_bn, bool) or self.freeze_bn == "stats"):
            raise TypeError(f"freeze_bn must be True, False or 'stats' (running statistics frozen, affine "
                            f"parameters trained), got {self.freeze_bn!r}.")
        check_int(self.dim, "dim", 1)
        check_int(self.classes_per_batch, "classes_per_batch", 2)   # the MS loss needs negatives
        check_int(self.instances, "instances", 2)                   # ... and positives
        for name in ("alpha", "beta"):
            check_number(getattr(self, name), name, positive=True)
        check_number(self.lam, "lam")
        check_number(self.margin, "margin", minimum=0.0)
        check_number(self.jitter, "jitter", minimum=0.0)
        if self.weights is not None and not isinstance(self.weights, str):
            raise TypeError(f"weights must be None or a torchvision weights name such as 'IMAGENET1K_V1', "
                            f"got {self.weights!r}.")


def _augment(images: torch.Tensor, transform) -> torch.Tensor:
    return torch.stack([transform(img) for img in images])


def _check_images(images, labels: torch.Tensor) -> None:
    if isinstance(images, (list, tuple)):
        bad = next((i for i, x in enumerate(images) if not torch.is_tensor(x) or x.dtype != torch.uint8
                    or x.ndim != 3 or x.shape[0] != 3), None)
        if bad is not None or not images:
            raise ValueError("images given as a list must be non-empty uint8 tensors (3, H, W); "
                             f"item {bad} is not.")
    elif not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a uint8 tensor (n, 3, H, W) or a list of (3, H, W) ones, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}.")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")


def _aux_loss(support: torch.Tensor) -> torch.Tensor:
    """FRN's auxiliary loss: squared Frobenius norms of the products between different classes' support
    features (each class's ``(shot·r, d)`` block, all scaled by the norm of the whole support tensor),
    summed over the unordered class pairs. FRN's reference code also fills its unused pair slots with
    class 0 paired with itself; we keep only the cross-class terms the loss is meant to penalise."""
    s = support / support.norm()
    way = s.shape[0]
    gram = torch.einsum("aid,bjd->abij", s, s).square().sum((-2, -1))
    return gram[~torch.eye(way, dtype=torch.bool)].sum() / 2


def train_frn(images: torch.Tensor, labels: torch.Tensor, config: FRNConfig = FRNConfig(),
              progress: bool = True, device: str = "cpu") -> tuple[FRN, list[dict]]:
    """Train FRN episodically. Returns the model (eval mode) and a history of loss and accuracy."""
    _check_images(images, labels)
    torch.manual_seed(config.seed)
    model = FRN(width=config.width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.milestones), gamma=config.gamma)
    sampler = EpisodeSampler(labels.tolist(), config.way, config.shot, config.query, config.episodes, config.seed)
    transform = train_transform(config.image_size, config.crop_scale)
    target = torch.arange(config.way, device=device).repeat_interleave(config.query)
    history = []
    bar = tqdm(sampler, desc="FRN", disable=not progress)
    for step, episode in enumerate(bar):
        x = _augment(images[episode], transform).to(device)
        support, query, _ = sampler.split(x)
        way, shot = support.shape[:2]
        feats = model.positions(torch.cat([support.flatten(0, 1), query]))   # one batch, as FRN trains
        s = feats[:way * shot].reshape(way, shot, *feats.shape[1:])
        logits = model.head(s, feats[way * shot:])
        frn_loss = F.cross_entropy(logits, target)
        loss = frn_loss + config.aux_weight * _aux_loss(s.flatten(1, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": loss.item(), "frn_loss": frn_loss.item(),
                        "accuracy": (logits.argmax(1) == target).float().mean().item(), "lr": opt.param_groups[0]["lr"]})
        sched.step()
        _report(bar, history)
    return model.eval(), history


def train_gpw(images, labels: torch.Tensor, config: GPWConfig = GPWConfig(),
              progress: bool = True, device: str = "cpu") -> tuple[GPWEmbedding, list[dict]]:
    """Train the GPW embedding with the MS loss. Returns the model (eval mode) and a history.

    ``images``: a uint8 tensor ``(n, 3, H, W)``, or a list of ``(3, H_i, W_i)`` uint8 tensors of different sizes
    (CUB's whole images, short side resized, as the MS-loss reference crops them)."""
    _check_images(images, labels)
    torch.manual_seed(config.seed)
    model = GPWEmbedding(config.arch, config.dim, weights=config.weights, last_stride=config.last_stride,
                         freeze_bn=config.freeze_bn)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(config.schedule, config.warmup, config.batches,
                                                             config.milestones))
    autocast = _autocast(config.precision, device)
    sampler = BalancedBatchSampler(labels.tolist(), config.classes_per_batch, config.instances,
                                   config.batches, config.seed)
    transform = train_transform(config.image_size, config.crop_scale, config.jitter)
    history = []
    bar = tqdm(sampler, desc="GPW", disable=not progress)
    for step, batch in enumerate(bar):
        x = _augment(images[batch] if torch.is_tensor(images) else [images[i] for i in batch], transform).to(device)
        with autocast:
            embeddings = model(x)
        loss = multi_similarity_loss(embeddings.float(), labels[batch].to(device), config.alpha, config.beta,
                                     config.lam, config.margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]})
        sched.step()
        _report(bar, history)
    return model.eval(), history


def _report(bar, history: list[dict], every: int = 10) -> None:
    """Show the mean loss (and accuracy) of the last ``every`` steps on the progress bar."""
    if len(history) % every == 0:
        recent = history[-every:]
        bar.set_postfix({k: f"{sum(h[k] for h in recent) / len(recent):.3f}" for k in recent[0] if k not in ("step", "lr")})


if __name__ == "__main__":   # python -m sfam_lite.train, the same as python -m sfam_lite train
    from sfam_lite.cli import train_main
    raise SystemExit(train_main())
