"""Training: deterministic for a seed, and the full configurations take one finite step on CPU."""
import math

import pytest
import torch

from sfam_lite.train import FRNConfig, GPWConfig, train_frn, train_gpw


def toy_data(n_classes=6, per_class=8, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_classes * per_class, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.arange(n_classes).repeat_interleave(per_class)


def test_frn_training_is_deterministic_and_changes_the_weights():
    images, labels = toy_data()
    cfg = FRNConfig(width=0.0625, image_size=32, way=3, shot=1, query=2, episodes=3, milestones=(2,))
    a, hist = train_frn(images, labels, cfg, progress=False)
    b, _ = train_frn(images, labels, cfg, progress=False)
    c, _ = train_frn(images, labels, FRNConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert len(hist) == 3 and all(math.isfinite(h["loss"]) for h in hist)


def test_gpw_training_is_deterministic():
    images, labels = toy_data()
    cfg = GPWConfig(dim=16, image_size=32, classes_per_batch=3, instances=2, batches=2)
    a, hist = train_gpw(images, labels, cfg, progress=False)
    b, _ = train_gpw(images, labels, cfg, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)


def test_full_frn_configuration_takes_one_step():
    images, labels = toy_data(n_classes=5, per_class=3, size=96)
    cfg = FRNConfig(width=1.0, image_size=84, way=5, shot=1, query=2, episodes=1)
    model, hist = train_frn(images, labels, cfg, progress=False)
    assert model.channels == 640 and math.isfinite(hist[0]["loss"])
    with torch.no_grad():
        assert model(torch.rand(1, 3, 84, 84)).shape == (1, 640, 5, 5)


def test_full_gpw_configuration_takes_one_step():
    """ResNet-50, 512-d, 227 px as in the paper; a batch of 2 classes × 2 images instead of 16 × 5 to stay fast."""
    images, labels = toy_data(n_classes=2, per_class=2, size=256)
    cfg = GPWConfig(arch="resnet50", last_stride=2, freeze_bn=True, image_size=227, classes_per_batch=2, instances=2,
                    batches=1, lr=3e-5)
    model, hist = train_gpw(images, labels, cfg, progress=False)
    assert math.isfinite(hist[0]["loss"])
    with torch.no_grad():
        emb = model(torch.rand(1, 3, 227, 227))
    assert emb.shape == (1, 512)


def test_cosine_schedule_matches_torch_after_the_warm_up():
    """Our warm-up + cosine multiplier against torch's own CosineAnnealingLR (a second implementation)."""
    from sfam_lite.train import lr_factor
    steps, warmup = 40, 7
    factor = lr_factor("cosine", warmup, steps)
    assert [factor(s) for s in range(warmup)] == [(s + 1) / warmup for s in range(warmup)]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=0.0)
    for s in range(warmup, steps):
        assert math.isclose(factor(s), opt.param_groups[0]["lr"], abs_tol=1e-12)
        opt.step()
        cosine.step()
    constant = lr_factor("constant", 3, steps)
    assert [constant(s) for s in range(5)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]


def test_bad_gpw_configuration_is_refused_when_made():
    import pytest
    for field, value, message in (("schedule", "linear", "'linear'"), ("precision", "float16", "'float16'"),
                                  ("warmup", -1, "warmup >= 0"), ("batches", 0, "batches >= 1")):
        with pytest.raises(ValueError, match=message):
            GPWConfig(**{field: value})


def test_gpw_learning_rate_follows_the_schedule():
    """The optimiser sees the schedule: cosine over 3 batches (factors 1, 0.75, 0.25) and constant (1, 1, 1)
    must end with different weights."""
    images, labels = toy_data()
    base = dict(dim=16, image_size=32, classes_per_batch=3, instances=2, batches=3, warmup=0)
    cos, _ = train_gpw(images, labels, GPWConfig(**base, schedule="cosine"), progress=False)
    const, _ = train_gpw(images, labels, GPWConfig(**base, schedule="constant"), progress=False)
    assert not all(torch.equal(x, y) for x, y in zip(cos.state_dict().values(), const.state_dict().values()))
    warm, hist = train_gpw(images, labels, GPWConfig(**{**base, "batches": 6, "warmup": 2}, schedule="cosine"),
                           progress=False)
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]   # warm-up, then cosine
    assert [h["lr"] for h in hist] == pytest.approx([1e-3 * f for f in expected], abs=1e-15)


def test_bfloat16_autocast_step_is_finite():
    images, labels = toy_data()
    cfg = GPWConfig(dim=16, image_size=32, classes_per_batch=3, instances=2, batches=2, precision="bfloat16")
    model, hist = train_gpw(images, labels, cfg, progress=False)
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert next(model.parameters()).dtype == torch.float32   # autocast changes the arithmetic, not the weights


def separable_data(n_classes=4, per_class=10, size=32, seed=0):
    """Each class a flat colour of its own, plus a little noise: any working trainer separates them quickly."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=torch.float32)
    base = colours[:n_classes].repeat_interleave(per_class, 0)[:, :, None, None].expand(-1, -1, size, size)
    noise = torch.randint(-20, 21, base.shape, generator=g).float()
    return (base + noise).clamp(0, 255).to(torch.uint8), torch.arange(n_classes).repeat_interleave(per_class)


def test_frn_training_learns_a_separable_problem_and_adds_the_auxiliary_loss():
    images, labels = separable_data()
    cfg = FRNConfig(width=0.0625, image_size=32, way=4, shot=1, query=3, episodes=20, milestones=(100,),
                    lr=0.05, crop_scale=(0.5, 1.0))
    _, hist = train_frn(images, labels, cfg, progress=False)
    first, last = hist[:5], hist[-5:]
    mean = lambda rows, key: sum(h[key] for h in rows) / len(rows)
    assert mean(last, "frn_loss") < 0.5 * mean(first, "frn_loss")
    assert mean(last, "accuracy") > 0.9 > hist[0]["accuracy"]
    # the auxiliary loss is non-negative and added with a positive weight
    assert all(h["loss"] >= h["frn_loss"] for h in hist) and any(h["loss"] > h["frn_loss"] for h in hist)


def test_gpw_training_learns_a_separable_problem():
    images, labels = separable_data()
    cfg = GPWConfig(dim=16, image_size=32, classes_per_batch=4, instances=3, batches=20, warmup=5)
    _, hist = train_gpw(images, labels, cfg, progress=False)
    mean = lambda rows: sum(h["loss"] for h in rows) / len(rows)
    assert mean(hist[-5:]) < 0.5 * mean(hist[:5])
