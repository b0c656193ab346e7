"""A model of the book and its test data, ready for the experiments: :func:`load_for` (and :func:`resolve_device`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ._checks import check_device

#: model kind → (its test split, the split whose boxes tune the reference maps): FRN's few-shot test and validation
#: classes; GPW's retrieval test classes (101-200) and its training classes
MODEL_SPLITS = {"frn": ("frn_test", "frn_val"), "gpw": ("retrieval_test", "retrieval_train")}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when torch sees one, else the CPU; any other name is checked
    (:func:`sfam_lite._checks.check_device`), so that asking for CUDA where there is none fails at once with a
    message, not later in the first tensor moved there."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


#: What training a CUB model with its recipe's configuration costs on the reader's GPU, said before it starts: an
#: estimate from the work (gpw-cub: 3,000 batches of 16 × 5 images through ResNet-50 at 227 px), not a measurement
#: (the book's machines have no T4).
FIRST_TRAINING_TIME = {"gpw-cub": "roughly 35-50 min on a Colab T4 (an estimate, not measured), many hours on a CPU"}


def first_run_note(model_name: str, data_root=None, weights_root=None, cache=None,
                   overrides: dict | None = None) -> list[str]:
    """What loading a CUB model (``frn-cub``, ``gpw-cub``) will need or do first, one line each; empty when the
    data, the weights and the trained model are all in place (and for the synthetic models, made on first use).

    CUB-200-2011 and FRN's weights are not downloaded by the chapters: a missing one is named with the command
    that gets it, into the folder the chapters read by default (the book's cache, so on Colab with the cache on
    Google Drive, once for every chapter). A gpw-cub that is not cached yet is trained now, at the cost said."""
    from data_download.resources import CUB200_ARCHIVE, FRN_WEIGHTS, download_command
    from . import zoo
    if model_name.endswith("synthetic"):
        return []
    lines = []
    root = Path(data_root) if data_root is not None else zoo.default_data_root(model_name, cache)
    if not (root / CUB200_ARCHIVE.folder / "images.txt").exists():
        lines.append(f"CUB-200-2011 is not in {root}: get it first ({CUB200_ARCHIVE.size / 1e9:.2f} GB) "
                     f"with `{download_command('cub200', None if data_root is None else root)}`.")
    if model_name == "frn-cub":
        path = zoo.frn_weights_path(weights_root, cache)
        if not path.exists():
            lines.append(f"FRN's released weights are not in {path.parents[len(Path(zoo.FRN_CUB_CHECKPOINT).parts) - 1]}:"
                         f" get them first (about {FRN_WEIGHTS.approximate_size.split(',')[0]}) with "
                         f"`{download_command('frn-weights', weights_root)}`.")
    elif model_name in zoo.RECIPES and zoo.cached_checkpoint(model_name, root, cache, **(overrides or {})) is None:
        c = zoo.config_for(model_name, **(overrides or {}))
        cost = "" if overrides else f": {FIRST_TRAINING_TIME[model_name]}" if model_name in FIRST_TRAINING_TIME else ""
        lines.append(f"{model_name} is not in the cache ({Path(cache or zoo.cache_dir()) / 'models'}): it is trained "
                     f"on first use, {c.batches:,} batches of {c.classes_per_batch * c.instances} images through "
                     f"{c.arch} at {c.image_size} px{cost}; then every chapter reads it from there.")
    return lines


def load_for(kind: str, model_name: str | None = None, data_root=None, weights_root=None, device: str = "auto",
             cache=None, overrides: dict | None = None, progress: bool = False, validation: bool = True):
    """The model and its test data for the experiments: ``(model, test, val_boxes)``.

    ``model_name`` is a zoo name (default ``"<kind>-synthetic"``; ``"frn-cub"`` / ``"gpw-cub"`` read CUB from
    ``data_root``, FRN's released weights from ``weights_root``). ``test`` is the
    :class:`~sfam_lite.evaluation.EvalSet` of the test classes (FRN's few-shot test split, or retrieval classes
    101–200); ``val_boxes`` the boxes of FRN's validation classes (GPW: its training classes), on which the
    reference maps are tuned (None with ``validation=False``)."""
    from data_download import CUB200, SyntheticCUB200
    from . import zoo
    from .evaluation import eval_set
    if kind not in MODEL_SPLITS:
        raise ValueError(f"unknown model kind {kind!r}; use 'frn' or 'gpw'.")
    model_name = model_name or f"{kind}-synthetic"
    if not model_name.startswith(kind):
        raise ValueError(f"model {model_name!r} is not a {kind.upper()} model; use {kind}-synthetic or {kind}-cub.")
    device = str(resolve_device(device))
    for line in first_run_note(model_name, data_root, weights_root, cache, overrides):
        print(line)
    model = zoo.load(model_name, data_root=data_root, weights_root=weights_root, progress=progress, device=device,
                     cache=cache, **(overrides or {}))
    root = Path(data_root) if data_root is not None else zoo.default_data_root(model_name, cache)
    dataset = SyntheticCUB200 if model_name.endswith("synthetic") else CUB200
    view = zoo.eval_transform_for(model)      # the recipe's evaluation view (FRN: 92/84; the real GPW: 256/227)
    test_split, val_split = MODEL_SPLITS[kind]
    test = eval_set(dataset(root, split=test_split), view, progress=progress)
    # the validation boxes only, in the evaluation view: read from the tables and image headers, no image decoded
    val_boxes = dataset(root, split=val_split).transformed_boxes(view) if validation else None
    return model, test, val_boxes
