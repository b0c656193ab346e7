"""Training: deterministic for a seed, and the full configurations take one finite step on CPU."""
import math

import pytest
import torch

from sfam_lite.models import FRN, GPWEmbedding
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
    assert_every_parameter_moved(a, cfg.seed, FRN, width=cfg.width)


def assert_every_parameter_moved(model, seed, cls, **kwargs):
    """Every trainable parameter differs from the one the trainer started from (the same class, made after the same
    seed, as train_frn and train_gpw make it): the optimiser stepped on all of them."""
    torch.manual_seed(seed)
    start = dict(cls(**kwargs).named_parameters())
    frozen = [k for k, p in model.named_parameters() if not p.requires_grad]
    moved = {k: not torch.equal(p, start[k]) for k, p in model.named_parameters() if p.requires_grad}
    assert moved and all(moved.values()), [k for k, m in moved.items() if not m]
    assert all(torch.equal(dict(model.named_parameters())[k], start[k]) for k in frozen)


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
    assert_every_parameter_moved(model, cfg.seed, FRN, width=1.0)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 84, 84)).shape == (1, 640, 5, 5)


def test_full_gpw_configuration_takes_one_step():
    """ResNet-50, 512-d, 227 px as in the paper; a batch of 2 classes × 2 images instead of 16 × 5 to stay fast."""
    images, labels = toy_data(n_classes=2, per_class=2, size=256)
    cfg = GPWConfig(arch="resnet50", last_stride=2, freeze_bn=True, image_size=227, classes_per_batch=2, instances=2,
                    batches=1, lr=3e-5)
    model, hist = train_gpw(images, labels, cfg, progress=False)
    assert math.isfinite(hist[0]["loss"])
    assert_every_parameter_moved(model, cfg.seed, GPWEmbedding, arch="resnet50", dim=512, last_stride=2, freeze_bn=True)
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


def test_step_schedule_matches_torch_multistep():
    """gpw-cub's schedule (the MS-loss reference's ×0.1 at 1,200 and 2,400) against torch's MultiStepLR."""
    from sfam_lite.train import lr_factor
    factor = lr_factor("step", 0, 3000, (1200, 2400))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    multistep = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1200, 2400], gamma=0.1)
    for s in range(3000):
        assert math.isclose(factor(s), opt.param_groups[0]["lr"], rel_tol=1e-12)
        opt.step()
        multistep.step()
    import pytest
    with pytest.raises(ValueError, match="needs milestones"):
        GPWConfig(schedule="step")
    with pytest.raises(TypeError, match="milestones"):
        GPWConfig(schedule="step", milestones="1200")


def test_gpw_trains_on_whole_images_of_different_sizes():
    """CUB's images are kept whole (short side resized, their own aspect ratio) and cropped per batch: a list of
    (3, H, W) uint8 tensors of different sizes trains, gives the same model as the same images stacked when they
    happen to share one size, and a list with a bad item is refused."""
    images, labels = toy_data(n_classes=2, per_class=2, size=40)
    cfg = GPWConfig(dim=8, image_size=32, classes_per_batch=2, instances=2, batches=2)
    stacked, _ = train_gpw(images, labels, cfg, progress=False)
    listed, _ = train_gpw(list(images), labels, cfg, progress=False)
    for a, b in zip(stacked.state_dict().values(), listed.state_dict().values()):
        assert torch.equal(a, b)
    mixed = [images[0][:, :, :40], images[1][:, :36, :], images[2], images[3][:, :, :34]]
    model, hist = train_gpw(mixed, labels, cfg, progress=False)
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    import pytest
    with pytest.raises(ValueError, match="item 1"):
        train_gpw([images[0], images[1].float()], labels[:2], cfg, progress=False)


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


COLOURS = torch.tensor([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230]],
                       dtype=torch.float32)


def separable_data(n_classes=4, per_class=10, size=32, patch=14, seed=0):
    """The class is the colour of a centred square; the rest of the image is a random colour of its own (the same
    distribution for every class) plus a little noise. Any working trainer separates the classes in a few dozen
    steps, but an untrained network does not: its features follow the large background as much as the square."""
    g = torch.Generator().manual_seed(seed)
    n = n_classes * per_class
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (n, 3, 1, 1), generator=g).float().expand(n, 3, size, size).clone()
    lo = (size - patch) // 2
    images[:, :, lo:lo + patch, lo:lo + patch] = COLOURS[labels][:, :, None, None]
    images += torch.randint(-20, 21, images.shape, generator=g).float()
    return images.clamp(0, 255).to(torch.uint8), labels


def mean(rows, key):
    return sum(h[key] for h in rows) / len(rows)


def test_frn_training_learns_a_separable_problem_and_adds_the_auxiliary_loss():
    """The loss falls and the accuracy on the training episodes rises from near chance (1/4) to near 1.
    (That the history's loss and accuracy use the true query labels is checked by
    test_frn_history_is_the_loss_of_the_true_labels_plus_the_auxiliary_loss.)"""
    images, labels = separable_data()
    cfg = FRNConfig(width=0.0625, image_size=32, way=4, shot=1, query=3, episodes=30, milestones=(100,),
                    lr=0.05, crop_scale=(0.5, 1.0))
    _, hist = train_frn(images, labels, cfg, progress=False)
    first, last = hist[:5], hist[-5:]
    assert mean(last, "frn_loss") < 0.5 * mean(first, "frn_loss")
    assert mean(first, "accuracy") < 0.7 and mean(last, "accuracy") > 0.85
    # the auxiliary loss is non-negative and added with a positive weight
    assert all(h["loss"] >= h["frn_loss"] for h in hist) and any(h["loss"] > h["frn_loss"] for h in hist)


def recall_at_1_loop(model, images, labels):
    """Share of images whose most cosine-similar other image (plain loop, eval view) has the same label."""
    from sfam_lite.transforms import normalize
    with torch.no_grad():
        e = model.eval()(normalize()(images)).double()
    hits = 0
    for i in range(len(e)):
        sims = [float(e[i] @ e[j]) / float(e[i].norm() * e[j].norm()) if j != i else -math.inf for j in range(len(e))]
        hits += int(labels[max(range(len(e)), key=sims.__getitem__)] == labels[i])
    return hits / len(e)


def test_gpw_training_learns_a_separable_problem():
    """The MS loss falls, and Recall@1 on unseen images of the same classes rises above the untrained embedding's
    (the same initial weights, made as train_gpw makes them)."""
    images, labels = separable_data()
    unseen, unseen_labels = separable_data(seed=1)
    cfg = GPWConfig(dim=16, image_size=32, classes_per_batch=4, instances=3, batches=15, warmup=5)
    torch.manual_seed(cfg.seed)
    untrained = GPWEmbedding(cfg.arch, cfg.dim, weights=cfg.weights, last_stride=cfg.last_stride,
                             freeze_bn=cfg.freeze_bn)
    model, hist = train_gpw(images, labels, cfg, progress=False)
    assert mean(hist[-5:], "loss") < 0.5 * mean(hist[:5], "loss")
    before, after = recall_at_1_loop(untrained, unseen, unseen_labels), recall_at_1_loop(model, unseen, unseen_labels)
    assert before < 0.8 and after >= 0.95, (before, after)


# --- the loops' bookkeeping, step by step, against computations made outside them ------------------

def paper_aux_loss(support) -> float:
    """FRN's auxiliary loss written out with loops, float64: the episode's support features ``(way, shot·r, d)``
    divided by the Frobenius norm of the whole support tensor (as FRN's released code scales them), then the
    squared Frobenius norm of every product Ŝ_a Ŝ_bᵀ between two different classes a < b, summed."""
    s = support.double().numpy()
    s = s / math.sqrt(sum(float(x) ** 2 for x in s.ravel()))
    way, rows, _ = s.shape
    total = 0.0
    for a in range(way):
        for b in range(a + 1, way):
            for i in range(rows):
                for j in range(rows):
                    total += float(s[a, i] @ s[b, j]) ** 2
    return total


def cross_entropy_loop(logits, targets) -> float:
    """Mean of −log softmax(logits)[target], one row at a time, float64."""
    total = 0.0
    for row, t in zip(logits.double().tolist(), targets):
        top = max(row)
        total += -(row[t] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / len(targets)


def recording(monkeypatch, module_attr, base, method):
    """Replace ``sfam_lite.train.<module_attr>`` by a subclass of ``base`` whose ``method`` records its argument
    and result (detached); returns the list of records."""
    import sfam_lite.train as train
    records = []

    def wrapper(self, *args):
        out = getattr(base, method)(self, *args)
        records.append(([a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args],
                        out.detach().clone() if isinstance(out, torch.Tensor) else out))
        return out
    monkeypatch.setattr(train, module_attr, type("Recording" + base.__name__, (base,), {method: wrapper}))
    return records


def test_frn_history_is_the_loss_of_the_true_labels_plus_the_auxiliary_loss(monkeypatch):
    """Step by step: the recorded FRN loss is the cross-entropy of the logits against the true query labels (each
    query's target is the episode position of the support class with the query's own dataset label), the recorded
    accuracy uses the same labels, and loss − FRN loss is aux_weight times FRN's auxiliary loss of that step's
    support features, each recomputed here with loops. A loop that shifts or permutes the query labels, or flips
    or misplaces the auxiliary term, fails at the first step."""
    from sfam_lite.sampling import EpisodeSampler
    images, labels = separable_data(n_classes=5, per_class=6)
    cfg = FRNConfig(width=0.0625, image_size=32, way=4, shot=2, query=2, episodes=3, milestones=(100,),
                    aux_weight=0.5)
    heads = recording(monkeypatch, "FRN", FRN, "head")
    episodes = recording(monkeypatch, "EpisodeSampler", EpisodeSampler, "episode")
    _, hist = train_frn(images, labels, cfg, progress=False)
    assert len(hist) == len(heads) == len(episodes) == 3
    per_class = cfg.shot + cfg.query
    for h, ((support, _), logits), (_, episode) in zip(hist, heads, episodes):
        # the sampler's documented layout: class by class, `shot` supports then `query` queries
        support_labels = [int(labels[episode[c * per_class]]) for c in range(cfg.way)]
        assert len(set(support_labels)) == cfg.way
        queries = [episode[c * per_class + cfg.shot + k] for c in range(cfg.way) for k in range(cfg.query)]
        targets = [support_labels.index(int(labels[q])) for q in queries]
        assert logits.shape == (len(queries), cfg.way) and support.shape[:2] == (cfg.way, cfg.shot)
        # float32 losses of order 1 (ε = 1.2e-7) against float64 recomputations: 1e-5 leaves room for the sums
        assert math.isclose(h["frn_loss"], cross_entropy_loop(logits, targets), rel_tol=1e-5, abs_tol=1e-6)
        correct = sum(int(row.argmax()) == t for row, t in zip(logits, targets))
        assert math.isclose(h["accuracy"], correct / len(targets), rel_tol=1e-6)   # a float32 mean of 0/1
        aux = paper_aux_loss(support.flatten(1, 2))
        assert aux > 1e-3    # large enough for the comparison below to see a sign or a factor
        assert math.isclose(h["loss"] - h["frn_loss"], cfg.aux_weight * aux, rel_tol=1e-4, abs_tol=1e-6)


def test_gpw_history_is_the_ms_loss_of_the_batch_labels(monkeypatch):
    """Step by step: the recorded loss is the MS loss (the per-anchor loop of test_gpw) of that step's embeddings
    with the dataset labels of the batch's images; a loop that feeds shifted or permuted labels fails."""
    from sfam_lite.sampling import BalancedBatchSampler
    from test_gpw import ms_loss_loop
    images, labels = separable_data()
    cfg = GPWConfig(dim=16, image_size=32, classes_per_batch=3, instances=3, batches=3, warmup=0)
    embeddings = recording(monkeypatch, "GPWEmbedding", GPWEmbedding, "forward")
    batches = recording(monkeypatch, "BalancedBatchSampler", BalancedBatchSampler, "batch")
    _, hist = train_gpw(images, labels, cfg, progress=False)
    assert len(hist) == len(embeddings) == len(batches) == 3
    for h, (_, emb), (_, batch) in zip(hist, embeddings, batches):
        want = ms_loss_loop(emb.double(), [int(labels[i]) for i in batch], cfg.alpha, cfg.beta, cfg.lam, cfg.margin)
        assert want > 1e-3
        # float32 embeddings, exp(β·s) with β = 40: 1e-4 relative covers float32 rounding amplified by β
        assert math.isclose(h["loss"], want, rel_tol=1e-4)


def test_frn_on_cub_is_refused_with_exit_code_2_and_the_way_to_get_it(tmp_path, capsys):
    """``python -m sfam_lite.train frn --data cub`` stops at argument parsing (exit code 2, argparse's code for a bad
    command line) with a message that says why and what to use instead, before any data or cache is touched."""
    from sfam_lite.cli import train_main
    with pytest.raises(SystemExit) as stop:
        train_main(["frn", "--data", "cub", "--cache", str(tmp_path / "cache")])
    assert stop.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "FRN on CUB is not trained here" in out.err and "zoo.load('frn-cub')" in out.err
    assert not (tmp_path / "cache").exists()
