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
