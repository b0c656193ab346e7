"""One way to get a model: ``sfam_lite.zoo.load(name)``.

* ``"frn-synthetic"`` / ``"gpw-synthetic"``: trained on the synthetic benchmark on first use
  (deterministically, minutes on a CPU) and cached; later calls load the cache.
* ``"frn-cub"``: FRN's released ResNet-12 checkpoint for CUB (``python -m data_download frn-weights``).
* ``"gpw-cub"``: the paper's GPW configuration (ResNet-50, 227 px) trained on CUB classes 1–100;
  needs CUB, ideally ImageNet weights, and a GPU.

The cache folder is ``$SFAM_BOOK_CACHE`` or ``~/.cache/sfam-book``. A trained checkpoint is named by a
hash of the model name, its full configuration and the training data's metadata, so a different
config or dataset never loads a stale model; it is written to a temporary file and renamed, so an
interrupted training never leaves a checkpoint that loads. Checkpoints are read with
``torch.load(..., weights_only=True)``, and each carries a SHA-256 of its content: a damaged, truncated or empty
cached checkpoint (or one without the hash) is reported with a warning naming it and trained again; a released
checkpoint that cannot be read raises :class:`CheckpointError` naming its path.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

import torch

from ._checks import check_choice, check_device
from .models import FRN, GPWEmbedding
from .train import TRAINING_VERSION, FRNConfig, GPWConfig, train_frn, train_gpw
from .transforms import FRN_RESIZE_RATIO, eval_transform

NAMES = ("frn-synthetic", "gpw-synthetic", "frn-cub", "gpw-cub")
FRN_CUB_CHECKPOINT = "trained_model_weights/CUB_fewshot_raw/FRN/ResNet-12/model.pth"
#: FRN's released CUB model has no configuration here: it evaluates at FRN's 92 → 84 view.
FRN_CUB_IMAGE_SIZE = 84
#: What FRN's authors published for this checkpoint: 5-way 1-shot accuracy (%) on raw CUB's test classes with its 95 %
#: interval, over 10,000 episodes (FRN's paper, Table 4, and its repository's README).
FRN_CUB_PUBLISHED_ACCURACY = (83.55, 0.19)


class Recipe(NamedTuple):
    """How a zoo model is trained and evaluated: the training split, the configuration, and the evaluation view
    (resize the short side to ``round(eval_resize · config.image_size)``, centre-crop ``config.image_size``)."""
    split: str
    config: object
    eval_resize: float = FRN_RESIZE_RATIO


#: Training split, configuration and evaluation view of each trainable model.
RECIPES = {
    "frn-synthetic": Recipe("frn_train", FRNConfig()),
    "gpw-synthetic": Recipe("retrieval_train", GPWConfig()),
    # the MS-loss reference's configs/example_resnet50.yaml: ResNet-50 from ImageNet, BatchNorm in eval mode (its
    # statistics frozen, its affine parameters trained), 16 classes x 5 images, Adam lr 3e-5 x0.1 at iterations
    # 1,200 and 2,400 of 3,000, 227 px crops of 16-100 % of the whole image resized to a short side of 256
    # (_cub_training_images), evaluated on the centre 227 px of it. One departure: the reference keeps the
    # checkpoint with the best Recall@1 on the test classes; the zoo keeps the last one, as choosing on the
    # classes a chapter reports would flatter them.
    "gpw-cub": Recipe("retrieval_train", GPWConfig(arch="resnet50", last_stride=2, freeze_bn="stats", image_size=227,
                                                   batches=3000, lr=3e-5, weight_decay=5e-4, crop_scale=(0.16, 1.0),
                                                   schedule="step", milestones=(1200, 2400), warmup=0,
                                                   weights="IMAGENET1K_V1"),
                      eval_resize=256 / 227),
}


def data_name(model: str | None) -> str:
    """What a model's numbers were measured on, for captions: ``"the synthetic benchmark"`` for the ``-synthetic``
    models, ``"CUB-200-2011"`` for the ``-cub`` ones, and ``"the data given"`` for any other model (a reader's
    own, or ``None``), which is neither."""
    if str(model).endswith("-synthetic"):
        return "the synthetic benchmark"
    if str(model).endswith("-cub"):
        return "CUB-200-2011"
    return "the data given"


def cache_dir() -> Path:
    """The book's cache folder (:func:`data_download.resources.cache_folder`): ``$SFAM_BOOK_CACHE`` or
    ``~/.cache/sfam-book``."""
    from data_download.resources import cache_folder
    return cache_folder()


def default_data_root(name: str, cache: Path | None = None) -> Path:
    """Where the book keeps a dataset by default: ``$SFAM_BOOK_CACHE/data/synthetic`` (or ``.../cub200``),
    or the same below ``cache``. ``name`` is a dataset (``"synthetic"``, ``"cub200"``) or a model name ending in one."""
    from data_download.resources import DEFAULT_ROOTS
    return Path(cache or cache_dir()) / DEFAULT_ROOTS["synthetic" if name.endswith("synthetic") else "cub200"]


def config_for(name: str, **overrides):
    """The configuration ``load(name, **overrides)`` trains with; every field is checked when it is made
    (``TypeError`` or ``ValueError`` naming the field: e.g. ``episodes >= 1``, ``lr`` finite and positive)."""
    check_choice(name, "model", RECIPES)   # the trainable models
    base = RECIPES[name].config
    unknown = set(overrides) - {f.name for f in fields(base)}
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)} for {name}; valid: {[f.name for f in fields(base)]}.")
    return type(base)(**{**asdict(base), **overrides})


def eval_transform_for(model_or_name, config=None):
    """The evaluation transform of a zoo model (a ``model`` from :func:`load`, or a name and its ``config``):
    its recipe's view at the configuration's image size, as a box-aware
    :func:`sfam_lite.transforms.eval_transform`, to give to :func:`sfam_lite.evaluation.eval_set` or as a
    :class:`data_download.CUB200` ``transform``."""
    if isinstance(model_or_name, str):
        name = model_or_name
        config = config if config is not None else (RECIPES[name].config if name in RECIPES else None)
    else:
        name, config = model_or_name.meta["name"], model_or_name.meta["config"]
    check_choice(name, "model", NAMES)
    size = config.image_size if config is not None else FRN_CUB_IMAGE_SIZE
    ratio = RECIPES[name].eval_resize if name in RECIPES else FRN_RESIZE_RATIO
    return eval_transform(size, round(size * ratio))


def _data_fingerprint(dataset) -> str:
    """The metadata tables and the completion marker (for the synthetic benchmark: its generation parameters,
    which decide the pixels), so that other data never loads a model trained on different data."""
    from data_download.publish import read_marker
    folder = Path(dataset.folder)
    h = hashlib.sha256()
    for name in ("images.txt", "image_class_labels.txt", "bounding_boxes.txt", "classes.txt"):
        h.update((folder / name).read_bytes())
    h.update(json.dumps(read_marker(folder), sort_keys=True).encode())
    return h.hexdigest()


#: Part of the cache key: checkpoints of format 2 carry a content hash (:func:`record_digest`); those written
#: before have another key, so they are never read (their models are trained again, to the same weights).
CHECKPOINT_FORMAT = 2


def checkpoint_path(name: str, config, fingerprint: str, cache: Path | None = None) -> Path:
    key = json.dumps({"name": name, "config": asdict(config), "data": fingerprint, "code": TRAINING_VERSION,
                      "format": CHECKPOINT_FORMAT},
                     sort_keys=True, default=list)
    return Path(cache or cache_dir()) / "models" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


#: Key of a checkpoint's content hash (:func:`record_digest`), written by :func:`save_checkpoint`.
DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable (truncated, empty, not a checkpoint), missing a field, or
    with a content hash that does not match (bytes changed on disk). The message names the file and the fix."""


def record_digest(record: dict) -> str:
    """SHA-256 of a checkpoint record's content (every field but the hash itself): each tensor's name, dtype, shape
    and bytes, and the other fields as canonical JSON. ``torch.load`` does not check the CRCs of the zip it reads,
    so bytes zeroed on disk would otherwise load as silently changed weights."""
    h = hashlib.sha256()
    for key in sorted(record):
        if key == DIGEST_KEY:
            continue
        value = record[key]
        h.update(f"\0{key}\0".encode())
        if key == "state_dict":
            for name in sorted(value):
                t = value[name].detach().cpu().contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_checkpoint(record: dict, path: Path) -> None:
    """Write ``record`` with its content hash (:func:`record_digest`) atomically: a temporary file in the same folder,
    then a rename; the file gets the user's umask."""
    from ._io import atomic_write
    record = {**record, DIGEST_KEY: record_digest(record)}
    atomic_write(path, lambda f: torch.save(record, f))


def read_checkpoint(path: Path, verify: bool = False):
    """``torch.load(path, weights_only=True)``, refusing files that carry arbitrary pickled objects.

    Any file that cannot be read as a checkpoint (empty, truncated, another format) raises :class:`CheckpointError`
    naming the path. ``verify=True`` (the zoo's own checkpoints) also requires the record's content hash to match:
    a checkpoint without one, or with changed bytes, raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():   # not a refused class but bytes that are no pickle at all
            raise CheckpointError(f"the checkpoint {path} cannot be read as a checkpoint (it is not a torch file: "
                                  f"{' '.join(str(exc).split()[-12:])[:160]}): it is damaged or truncated, or another "
                                  "kind of file. Delete it and load the model again (the zoo retrains its own models; "
                                  "get a released one again with python -m data_download).") from None
        raise ValueError(f"refusing to load {path}: it holds pickled Python objects other than tensors and plain "
                         f"containers, which could run code when loaded (torch.load weights_only=True said: "
                         f"{str(exc).splitlines()[0]}). Use a checkpoint saved as a plain state_dict.") from None
    except FileNotFoundError:
        raise
    except Exception as exc:   # zipfile.BadZipFile, EOFError, RuntimeError from the zip reader, ...
        size = path.stat().st_size if path.exists() else 0
        what = "is empty" if size == 0 else f"cannot be read as a checkpoint ({type(exc).__name__}: " \
            f"{' '.join(str(exc).split())[:160]})"
        raise CheckpointError(f"the checkpoint {path} {what}: it is damaged or truncated (an interrupted copy, a full "
                              "disk) or not a torch checkpoint. Delete it and load the model again (the zoo retrains "
                              "its own models; get a released one again with python -m data_download).") from None
    if verify:
        problem = None
        if not isinstance(record, dict) or not isinstance(record.get("state_dict"), dict):
            problem = "it is not a zoo checkpoint (no state_dict)"
        elif DIGEST_KEY not in record:
            problem = "it carries no content hash (written by an older version, or not by the zoo)"
        elif "history" not in record:
            problem = "it has no training history"
        else:
            try:
                ok = record_digest(record) == record[DIGEST_KEY]
            except Exception:   # a field of an unexpected type
                ok = False
            if not ok:
                problem = "its content hash does not match: its bytes changed after it was written (a damaged disk " \
                          "or copy), so its weights cannot be trusted"
        if problem:
            raise CheckpointError(f"the checkpoint {path} cannot be used: {problem}. Delete it and load the model "
                                  "again to retrain it.")
    return record


def _build(name: str, config):
    return FRN(width=config.width) if name.startswith("frn") else \
        GPWEmbedding(config.arch, config.dim, last_stride=config.last_stride, freeze_bn=config.freeze_bn)


def _cub_transform(config):
    """CUB's whole images with the short side resized to 256/227 of the crop (the MS-loss reference's 256 for 227
    px crops), as uint8 of their own aspect ratio; the training crops are taken from the whole image."""
    from torchvision.transforms import v2
    return v2.Compose([v2.Resize(round(config.image_size * 256 / 227)), v2.PILToTensor()])


def _training_images(dataset, synthetic: bool, progress: bool):
    """``(images, labels)``: the synthetic benchmark's one-size images as a uint8 tensor; CUB's as a list of uint8
    tensors of their own sizes (:func:`_cub_transform`)."""
    from tqdm.auto import tqdm

    from data_download import load_tensors
    if synthetic:   # one image size already: read the files directly
        return load_tensors(dataset, progress=progress)[:2]
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=min(8, os.cpu_count() or 1),
                                         collate_fn=lambda items: items)
    images, labels = [], []
    for batch in tqdm(loader, desc="training images", disable=not progress, leave=False):
        images += [x for x, _, _ in batch]
        labels += [y for _, y, _ in batch]
    return images, torch.as_tensor(labels)


def load(name: str, *, data_root=None, weights_root=None, cache: Path | None = None, progress: bool = True,
         device: str = "cpu", **overrides):
    """Return the model ``name`` in eval mode, training and caching it on first use.

    ``model.meta`` holds ``{"name", "config", "history", "checkpoint", "train_seconds", "threads"}``
    (``history``: per-step loss and accuracy of the training run; ``train_seconds``: its wall time with
    ``threads`` torch threads). ``overrides`` change fields of the configuration (and the cache key).

    The configuration and ``device`` are checked before any data is read. The synthetic benchmark is generated
    when missing only at the default location (:func:`default_data_root`) or in an explicit ``data_root`` that
    already exists: a ``data_root`` that does not exist is refused (a typo would otherwise receive a whole new
    benchmark); create the folder, or generate the benchmark there with ``python -m data_download synthetic --root``.
    """
    check_choice(name, "model", NAMES)
    check_device(device)
    if name == "frn-cub":
        if overrides:
            raise ValueError(f"frn-cub is FRN's released checkpoint and has no configuration to change; "
                             f"got {sorted(overrides)}. Train 'frn-synthetic' with overrides instead.")
        return _load_frn_cub(weights_root, device, cache)
    from data_download import CUB200, DatasetNotFoundError, SyntheticCUB200
    from data_download.resources import download_command
    config = config_for(name, **overrides)
    split = RECIPES[name].split
    root = Path(data_root) if data_root is not None else default_data_root(name, cache)
    synthetic = name.endswith("synthetic")
    if synthetic and data_root is not None and not root.exists() and root != default_data_root(name, cache):
        raise FileNotFoundError(f"data_root {str(root)!r} does not exist. Check the path, or generate the synthetic "
                                f"benchmark there with `{download_command('synthetic', root)}` "
                                "(or pass data_root=None to use the book's default folder).")
    if synthetic:
        try:
            dataset = SyntheticCUB200(root, split=split)
        except DatasetNotFoundError:
            dataset = SyntheticCUB200(root, split=split, download=True)   # generate the benchmark offline
    else:
        dataset = CUB200(root, split=split, transform=_cub_transform(config))
    path = checkpoint_path(name, config, _data_fingerprint(dataset), cache)
    record, model, problem = *_cached(name, config, path), None
    if record is None:
        seen = _file_state(path)
        with training_lock(path):              # a second process training the same model waits here ...
            if _file_state(path) not in (None, seen):   # ... and reuses what the first one wrote meanwhile
                record, model = _cached(name, config, path)
            if record is None:
                record, model, path, problem = _train_and_save(name, config, dataset, synthetic, path, progress,
                                                               device)
    model = model.to(device).eval()
    model.meta = {"name": name, "config": config, "history": record["history"], "checkpoint": str(path),
                  "train_seconds": record.get("train_seconds"), "threads": record.get("threads")}
    if problem:
        model.meta["cache_error"] = problem
    return model


@contextmanager
def training_lock(path: Path):
    """Hold an exclusive lock for training the model whose checkpoint is ``path``: a second process that trains the
    *same* model (same name, configuration and data) waits here and then reuses the first one's checkpoint, while
    other models train in parallel. The lock is ``flock`` on an empty file ``.<checkpoint name>.lock`` beside the
    checkpoint, which stays; where the file system has no locks the block runs unlocked."""
    from data_download.errors import disk_errors
    from data_download.publish import exclusive_lock
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), create=True):
        yield


def _file_state(path: Path):
    """What identifies one version of a file (None when there is none): its size and modification time."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _cached(name: str, config, path: Path):
    """``(record, model)`` from the zoo's checkpoint at ``path``, or ``(None, None)`` when there is none or it cannot
    be trusted (then with a warning naming it: it is trained again)."""
    if not path.exists():
        return None, None
    try:
        record = read_checkpoint(path, verify=True)
        model = _build(name, config)
        model.load_state_dict(record["state_dict"])
        return record, model
    except (CheckpointError, RuntimeError) as exc:   # RuntimeError: state_dict keys or shapes of another model
        warnings.warn(f"{' '.join(str(exc).split())} Training it again; the new checkpoint replaces it.",
                      stacklevel=3)
        return None, None


def _train_and_save(name, config, dataset, synthetic, path, progress, device):
    """Train ``name`` and write its checkpoint; ``(record, model, path, problem)``, ``path`` being where the
    checkpoint was kept and ``problem`` why it is not the cache's path (None when it is)."""
    problem = None
    images, labels = _training_images(dataset, synthetic, progress)
    trainer = train_frn if name.startswith("frn") else train_gpw
    start = time.perf_counter()
    model, history = trainer(images, labels, config, progress=progress, device=device)
    record = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
              "config": asdict(config), "history": history, "name": name,
              "train_seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}
    try:
        save_checkpoint(record, path)
    except OSError as exc:   # the trained model must not be lost: keep it in the temporary folder instead
        from ._io import keep_elsewhere
        kept = keep_elsewhere(lambda f: torch.save({**record, DIGEST_KEY: record_digest(record)}, f), path.name)
        problem = (f"cannot write the checkpoint {path} ({exc.strerror or exc}); the trained model was kept at "
                   f"{kept}: free space or fix the folder, then move it to {path}.")
        warnings.warn(problem, stacklevel=4)
        path = kept
    return record, model, path, problem


def cached_checkpoint(name: str, data_root=None, cache: Path | None = None, **overrides) -> Path | None:
    """The checkpoint :func:`load` would read for ``name`` (a trainable model) if it is already in the cache, else
    None (also when the data it is trained on is not there yet): whether loading it will train it first."""
    from data_download import CUB200, DatasetNotFoundError, SyntheticCUB200
    from data_download.resources import download_command
    config = config_for(name, **overrides)
    root = Path(data_root) if data_root is not None else default_data_root(name, cache)
    try:
        dataset = (SyntheticCUB200 if name.endswith("synthetic") else CUB200)(root, split=RECIPES[name].split)
    except DatasetNotFoundError:
        return None
    path = checkpoint_path(name, config, _data_fingerprint(dataset), cache)
    return path if path.exists() else None


def frn_weights_path(weights_root=None, cache: Path | None = None) -> Path:
    """Where ``frn-cub`` reads FRN's released CUB checkpoint: below ``weights_root``, by default the folder
    ``python -m data_download frn-weights`` fills."""
    from data_download.resources import DEFAULT_ROOTS
    root = Path(weights_root) if weights_root is not None else Path(cache or cache_dir()) / DEFAULT_ROOTS["frn-weights"]
    return root / FRN_CUB_CHECKPOINT


def _load_frn_cub(weights_root, device, cache=None):
    from data_download.resources import download_command
    path = frn_weights_path(weights_root, cache)
    root = path.parents[len(Path(FRN_CUB_CHECKPOINT).parts) - 1]
    if not path.exists():
        raise FileNotFoundError(f"FRN's CUB checkpoint is not at {path}. Get it with "
                                f"`{download_command('frn-weights', root)}`.")
    model = FRN(width=1.0)
    state = read_checkpoint(path)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint {path} is not FRN's released ResNet-12 for CUB (its keys or shapes "
                              f"differ: {' '.join(str(exc).split())[:200]}). Get it again with "
                              f"`{download_command('frn-weights', root)}`.") from None
    model = model.to(device).eval()
    model.meta = {"name": "frn-cub", "config": None, "history": None, "checkpoint": str(path)}
    return model
