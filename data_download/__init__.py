"""data_download: CUB-200-2011, FRN's weights and the offline synthetic benchmark, for the SFAM book.

Command line (``python -m data_download --help``)::

    python -m data_download cub200 --root data/cub200          # the real dataset (1.1 GB)
    python -m data_download frn-weights --root data/frn         # FRN's released checkpoints
    python -m data_download synthetic --root data/synthetic     # the synthetic benchmark, offline

Python: :class:`CUB200` / :class:`SyntheticCUB200` (torchvision conventions), the split rules in
:data:`SPLITS`, and :class:`ResizeCropFlip` / :func:`transform_boxes` to keep boxes aligned with
transformed images. The names are imported lazily, so that the download commands start without
importing torch.
"""
from __future__ import annotations

import importlib

from .errors import DataError, DatasetNotFoundError

_LAZY = {"ResizeCropFlip": "boxes", "transform_boxes": "boxes", "CUB200": "cub", "SyntheticCUB200": "cub",
         "SPLITS": "cub", "split_classes": "cub", "read_metadata": "cub", "load_tensors": "cub"}

__all__ = ["CUB200", "SyntheticCUB200", "SPLITS", "split_classes", "read_metadata", "load_tensors",
           "ResizeCropFlip", "transform_boxes", "DataError", "DatasetNotFoundError"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
