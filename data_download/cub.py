"""CUB-200-2011 (and the synthetic benchmark in the same layout) as a torchvision-style dataset.

Layout under ``root/CUB_200_2011/`` (Wah et al. 2011): ``images/<NNN.Name>/*.jpg`` and five text files,
one record per line, fields separated by spaces:

* ``images.txt``: ``image_id path`` (path relative to ``images/``)
* ``classes.txt``: ``class_id name``
* ``image_class_labels.txt``: ``image_id class_id``
* ``train_test_split.txt``: ``image_id is_train`` (1 or 0)
* ``bounding_boxes.txt``: ``image_id x y width height`` (float pixels, top-left corner)

Splits, by 1-based class id ``i`` (see :data:`SPLITS`):

* ``frn_train / frn_val / frn_test``: FRN's few-shot split (Tsingularity/FRN, ``data/init_CUB_fewshot.py``):
  ``i`` even / ``i % 4 == 1`` / ``i % 4 == 3`` (100 / 50 / 50 classes). FRN's released checkpoints
  were trained on it, so only its test classes are unseen by them.
* ``chen_base / chen_val / chen_novel``: Chen et al.'s split (wyharveychen/CloserLookFewShot,
  ``filelists/CUB/write_CUB_filelist.py``, which numbers the sorted class folders from 0):
  0-based index even / ``% 4 == 1`` / ``% 4 == 3``, i.e. 1-based ``i`` odd / ``i % 4 == 2`` / ``i % 4 == 0``.
  Both rules were read in those repositories' code.
* ``retrieval_train / retrieval_test``: classes 1–100 / 101–200 (the first and second half).
* ``train / test``: CUB's own image-level ``train_test_split.txt``; ``all``: every image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import VisionDataset

from .errors import DataError, DatasetNotFoundError, disk_errors
from .publish import FOLDER, MARKER, read_marker
from .resources import default_root, download_command


def _half(i: np.ndarray, n: int, first: bool) -> np.ndarray:
    return (i <= n // 2) if first else (i > n // 2)


#: Class-level splits: a rule on 1-based class ids ``i`` given the number of classes ``n``.
SPLITS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "frn_train": lambda i, n: i % 2 == 0,
    "frn_val": lambda i, n: i % 4 == 1,
    "frn_test": lambda i, n: i % 4 == 3,
    "chen_base": lambda i, n: (i - 1) % 2 == 0,
    "chen_val": lambda i, n: (i - 1) % 4 == 1,
    "chen_novel": lambda i, n: (i - 1) % 4 == 3,
    "retrieval_train": lambda i, n: _half(i, n, True),
    "retrieval_test": lambda i, n: _half(i, n, False),
}
IMAGE_SPLITS = ("all", "train", "test")


def split_classes(split: str, num_classes: int = 200) -> list[int]:
    """The 1-based class ids of a class-level split (every class for an image-level one)."""
    ids = np.arange(1, num_classes + 1)
    if split in IMAGE_SPLITS:
        return ids.tolist()
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLITS) + list(IMAGE_SPLITS)}.")
    return ids[SPLITS[split](ids, num_classes)].tolist()


@dataclass(frozen=True)
class Metadata:
    """The parsed text files, one entry per image in ``images.txt`` order."""
    image_ids: np.ndarray        # (n,) int
    paths: list[str]             # relative to images/
    class_ids: np.ndarray        # (n,) int, 1-based
    is_train: np.ndarray         # (n,) bool
    boxes: np.ndarray            # (n, 4) float64, x y width height
    class_names: dict[int, str]  # class id -> folder name


def read_table(path: Path, fields: tuple[str, ...], types: tuple[type, ...]) -> list[tuple]:
    """Parse a whitespace-separated file with one record of ``fields`` per line (blank lines skipped).

    A line with the wrong number of fields or a value of the wrong type raises a DataError naming the
    file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}, line {number}"
            if len(parts) != len(fields):
                raise DataError(f"{where}: expected {len(fields)} fields '{' '.join(fields)}', found "
                                f"{len(parts)}: {line.strip()!r}. Repair or re-create the file.")
            try:
                row = tuple(t(p) for t, p in zip(types, parts))
            except ValueError:
                raise DataError(f"{where}: cannot read {line.strip()!r} as '{' '.join(fields)}'. "
                                "Repair or re-create the file.") from None
            if any(t is float and not np.isfinite(v) for t, v in zip(types, row)):
                raise DataError(f"{where}: non-finite number in {line.strip()!r}.")
            rows.append(row)
    return rows


def _by_id(rows: list[tuple], path: Path, ids: np.ndarray) -> dict[int, tuple]:
    table = {}
    for row in rows:
        if row[0] in table:
            raise DataError(f"{path}: image id {row[0]} appears twice.")
        table[row[0]] = row[1:]
    missing = [i for i in ids.tolist() if i not in table]
    if missing or len(table) != len(ids):
        extra = sorted(set(table) - set(ids.tolist()))
        raise DataError(f"{path} does not list the images of images.txt (missing ids {missing[:5]}, "
                        f"unknown ids {extra[:5]}).")
    return table


def read_metadata(folder: str | os.PathLike) -> Metadata:
    """Parse and cross-check the five text files of a CUB folder."""
    folder = Path(folder)
    images = read_table(folder / "images.txt", ("image_id", "path"), (int, str))
    ids = np.array([r[0] for r in images], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise DataError(f"{folder / 'images.txt'}: an image id appears twice.")
    classes = read_table(folder / "classes.txt", ("class_id", "name"), (int, str))
    names = dict(classes)
    labels = _by_id(read_table(folder / "image_class_labels.txt", ("image_id", "class_id"), (int, int)),
                    folder / "image_class_labels.txt", ids)
    split = _by_id(read_table(folder / "train_test_split.txt", ("image_id", "is_train"), (int, int)),
                   folder / "train_test_split.txt", ids)
    boxes = _by_id(read_table(folder / "bounding_boxes.txt", ("image_id", "x", "y", "width", "height"),
                              (int, float, float, float, float)), folder / "bounding_boxes.txt", ids)
    class_ids = np.array([labels[i][0] for i in ids.tolist()], dtype=np.int64)
    unknown = sorted(set(class_ids.tolist()) - set(names))
    if unknown:
        raise DataError(f"{folder / 'image_class_labels.txt'} uses class ids {unknown[:5]} that classes.txt lacks.")
    flags = np.array([split[i][0] for i in ids.tolist()])
    if not np.isin(flags, (0, 1)).all():
        raise DataError(f"{folder / 'train_test_split.txt'}: is_train must be 0 or 1.")
    box = np.array([boxes[i] for i in ids.tolist()], dtype=np.float64).reshape(-1, 4)
    bad = np.flatnonzero((box[:, 2] <= 0) | (box[:, 3] <= 0))
    if len(bad):
        raise DataError(f"{folder / 'bounding_boxes.txt'}: image id {ids[bad[0]]} has a box of zero or negative size.")
    return Metadata(ids, [r[1] for r in images], class_ids, flags == 1, box, names)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The dataset's one image loader: the file at ``path`` as an RGB PIL image (read fully, file closed)."""
    with Image.open(path) as im:
        return im.convert("RGB")


class CUB200(VisionDataset):
    """CUB-200-2011 from ``root/CUB_200_2011`` (made by ``python -m data_download cub200 --root ROOT``).

    ``dataset[k]`` is ``(image, label, box)``: the image read by ``loader`` (an RGB PIL image by default,
    :func:`load_rgb`) passed through ``transform``, the 0-based class index ``class_id - 1`` (the same for
    every split, so labels index per-class arrays directly), and the box as a float tensor
    ``(x, y, width, height)`` in the pixels of the returned image. The box follows the image when
    ``transform`` can move it: a transform with a ``transform_box(box, image_size)`` method
    (:class:`~data_download.boxes.ResizeCropFlip`, e.g. ``sfam_lite.transforms.eval_transform``) or any
    torchvision v2 transform (called on the image and a ``tv_tensors.BoundingBoxes``); otherwise it stays
    in the original image's pixels.
    """

    command = "cub200"

    def __init__(self, root: str | os.PathLike | None = None, split: str = "all",
                 transform: Callable | None = None, download: bool = False,
                 loader: Callable[[Path], object] = load_rgb) -> None:
        super().__init__(Path(root).expanduser() if root is not None else default_root(self.command), transform=transform)
        self.folder = self.root / FOLDER
        self.split = split
        self.loader = loader
        split_classes(split)   # an unknown split fails here, before any download
        if download:
            self._download()
        self._check_complete()
        meta = read_metadata(self.folder)
        num_classes = len(meta.class_names)
        self.classes = split_classes(split, num_classes)
        if split in ("train", "test"):
            keep = meta.is_train if split == "train" else ~meta.is_train
        else:
            keep = np.isin(meta.class_ids, self.classes)
        index = np.flatnonzero(keep)
        self.meta = meta
        self.num_classes = num_classes
        self.image_ids = meta.image_ids[index]
        self.paths = [meta.paths[i] for i in index]
        self.class_ids = meta.class_ids[index]
        self.boxes = torch.as_tensor(meta.boxes[index], dtype=torch.float32)
        self.labels = torch.as_tensor(self.class_ids - 1)

    def _download(self) -> None:
        from .install import install
        from .resources import CUB200_ARCHIVE as resource

        install(resource, self.root)

    def _command(self) -> str:
        return download_command(self.command, self.root)

    def _check_complete(self) -> None:
        if read_marker(self.folder) is not None:
            return
        if self.folder.exists():
            if all((self.folder / name).is_file() for name in ("images.txt", "image_class_labels.txt")):
                cause = ("it holds CUB's tables, so it was probably extracted or copied by hand (the commands mark "
                         "a folder complete only after verifying it)")
            else:
                cause = "an earlier run was interrupted, or the folder was made by hand"
            archive = (f"; to reuse an archive you already have, save it as {self.root}/CUB_200_2011.tgz first and the "
                       "command verifies and extracts it") if self.command == "cub200" else ""
            raise DatasetNotFoundError(
                f"{self.folder} is incomplete: it has no {MARKER} ({cause}). Move it away (or delete it) and run "
                f"`{self._command()}`{archive}.")
        raise DatasetNotFoundError(f"No dataset in {self.folder}. Get it with `{self._command()}` "
                                   "(or pass download=True).")

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, index: int) -> Path:
        return self.folder / "images" / self.paths[index]

    def load_image(self, index: int):
        """Image ``index`` as ``loader`` reads it, untransformed; an unreadable file is a DataError."""
        path = self.image_path(index)
        with disk_errors(path, lambda exc, p: f"Cannot read image {p} ({exc}); re-create the dataset with "
                                              f"`{self._command()}`."):
            return self.loader(path)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of image ``index``, read from the file's header without decoding its pixels."""
        from PIL import Image
        path = self.image_path(index)
        with disk_errors(path, lambda exc, p: f"Cannot read image {p} ({exc}); re-create the dataset with "
                                              f"`{self._command()}`."):
            with Image.open(path) as image:
                return image.size

    def transformed_boxes(self, transform) -> torch.Tensor:
        """Every item's box ``(n, 4)`` as ``self[i]`` would return it with ``transform`` (one that can move boxes,
        e.g. :class:`ResizeCropFlip`), from the boxes table and each image's size alone: no image is decoded, so the
        boxes of a whole split cost a few bytes per image instead of the images themselves."""
        if not hasattr(transform, "transform_box"):
            raise TypeError(f"{type(transform).__name__} cannot move boxes without the image: give a transform with "
                            "transform_box(box, image_size), e.g. data_download.ResizeCropFlip.")
        if len(self) == 0:
            return torch.zeros(0, 4)
        return torch.stack([torch.as_tensor(transform.transform_box(self.boxes[k].clone(), self.image_size(k)),
                                            dtype=torch.float32) for k in range(len(self))])

    def __getitem__(self, index: int):
        image = self.load_image(index)
        box = self.boxes[index].clone()
        if self.transform is not None:
            image, box = _transform_with_box(self.transform, image, box)
        return image, int(self.labels[index]), box

    def extra_repr(self) -> str:
        return f"Split: {self.split}"

    def index_of(self, image_ids) -> list[int]:
        """Positions in this dataset of CUB image ids (``images.txt``'s first column); a KeyError names a missing id."""
        where = {int(i): k for k, i in enumerate(self.image_ids.tolist())}
        try:
            return [where[int(i)] for i in image_ids]
        except KeyError as exc:
            raise KeyError(f"image id {exc.args[0]} is not in the {self.split!r} split.") from None

    def class_name(self, label: int) -> str:
        """The folder name (``NNN.Name``) of a 0-based label."""
        return self.meta.class_names[label + 1]


def _image_size(image) -> tuple[int, int]:
    """``(width, height)`` of a PIL image or a ``(..., H, W)`` tensor."""
    return (image.shape[-1], image.shape[-2]) if isinstance(image, torch.Tensor) else image.size


def _transform_with_box(transform, image, box: torch.Tensor):
    """``transform(image)`` and ``box`` moved with it when the transform can move boxes (see :class:`CUB200`)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if hasattr(transform, "transform_box"):
        box = torch.as_tensor(transform.transform_box(box, _image_size(image)), dtype=torch.float32)
        return transform(image), box
    if isinstance(transform, v2.Transform):
        w, h = _image_size(image)
        image, moved = transform(image, tv_tensors.BoundingBoxes(box[None], format="XYWH", canvas_size=(h, w)))
        return image, moved.as_subclass(torch.Tensor)[0].to(torch.float32)
    return transform(image), box


class SyntheticCUB200(CUB200):
    """The synthetic benchmark (``python -m data_download synthetic --root ROOT``), read like CUB.

    ``download=True`` generates it with the default parameters if it is missing.
    """

    command = "synthetic"

    def _download(self) -> None:
        from .synthetic import generate

        generate(self.root)


def load_tensors(dataset: CUB200, progress: bool = False):
    """All images of ``dataset`` (untransformed, one size) as a uint8 tensor ``(n, 3, H, W)``, with labels and boxes."""
    from tqdm.auto import tqdm

    arrays = [np.asarray(dataset.load_image(k))
              for k in tqdm(range(len(dataset)), desc="reading", disable=not progress, leave=False)]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"Images differ in size ({sorted(shapes)[:3]} ...); resize them with a transform instead.")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, dataset.labels.clone(), dataset.boxes.clone()
