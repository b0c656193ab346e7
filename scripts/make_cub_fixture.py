"""Make a small stand-in for the real downloads, so that the chapters' CUB branch runs without CUB.

    python scripts/make_cub_fixture.py _build/cub_fixture

writes two folders under the given one, each installed exactly as the download commands install the real
archive a user saved by hand (``data_download.install``: the archive verified, extracted safely, its top folder
moved into place, stray entries discarded, the completion marker written last):

* ``cub200/CUB_200_2011/``: what ``python -m data_download cub200 --root .../cub200`` makes of
  ``CUB_200_2011.tgz``. The archive has the real one's layout (``images/<NNN.Name>/*.jpg``, the five tables,
  ``parts/``, ``attributes/``, ``README``, and a stray top-level ``attributes.txt``) and real CUB's
  irregularities: images of different sizes and aspect ratios with boxes in their own float pixels, and
  greyscale JPEGs. The pictures are the synthetic benchmark's (20 classes of 17 images, not CUB's 200
  classes of about 60): enough for FRN's 5-way 1-shot episodes with 16 queries on the 5 test classes.
* ``frn/trained_model_weights/``: what ``python -m data_download frn-weights --root .../frn`` makes of
  ``trained_model_weights.tar``, holding ``CUB_fewshot_raw/FRN/ResNet-12/model.pth`` in the released
  checkpoint's format (a plain state_dict of FRN's ResNet-12, the 98 keys of the release), here of a randomly
  initialised model (seed 0): the code path of ``frn-cub`` with meaningless numbers.

With ``--scale cub`` the archive has CUB's size instead, for measuring memory and time at the real scale
(``benchmarks/cub_scale.py``): 200 classes and 11,788 JPEGs (59 per class, 58 in the first 12 classes), most
about 500 × 375 px, in CUB's mix of landscape, square and portrait shapes, every 23rd one greyscale; 335 MB
(smoother pictures than CUB's 1.1 GB), made in 1 min 44 s on 2 cores with a peak of 1.6 GB.

Deterministic: the same archives (same checksums) on every run. An existing fixture is replaced.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GREY_EVERY = 23           # every 23rd image is a greyscale JPEG, as a few of CUB's are


@dataclass(frozen=True)
class Scale:
    """How large the stand-in is: ``classes`` × ``images_per_class`` synthetic pictures of side ``size``, given the
    ``shapes`` (width, height) in turn; the last image of each of the first ``short_classes`` classes is left out."""
    classes: int
    images_per_class: int
    size: int
    shapes: tuple
    short_classes: int = 0


SCALES = {
    # FRN's test split (class id % 4 == 3) has 5 classes: one 5-way episode of 1 support and 16 queries per class
    "small": Scale(20, 17, 96, ((96, 96), (144, 108), (96, 132), (120, 84), (192, 144))),
    # CUB-200-2011: 11,788 images in 200 classes (41 to 60 each; here 58 or 59), most 500 px on the long side
    "cub": Scale(200, 59, 128, ((500, 375), (500, 333), (500, 375), (375, 500), (500, 500), (500, 400),
                                (500, 375), (500, 281), (334, 500), (500, 355)), short_classes=12),
}


def _tar_bytes(top: Path, arcname_of, compress: bool) -> bytes:
    """A tar (gzipped if ``compress``) of every file under ``top``, in sorted order with fixed metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(top.rglob("*")):
            info = tar.gettarinfo(str(path), arcname_of(path))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1300000000, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    if not compress:
        return raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def _install(resource, data: bytes, root: Path) -> Path:
    """Save ``data`` as the resource's archive in ``root`` and install it as the download command would (its
    checksums are this archive's: the real ones would refuse it)."""
    from data_download.install import install
    root.mkdir(parents=True, exist_ok=True)
    (root / resource.filename).write_bytes(data)
    res = replace(resource, urls=(), size=len(data), md5=hashlib.md5(data).hexdigest(),
                  sha256=hashlib.sha256(data).hexdigest())
    folder, _ = install(res, root, progress=False, log=lambda msg: None)
    return folder


def cub_archive(work: Path, scale: Scale = SCALES["small"]) -> bytes:
    """``CUB_200_2011.tgz`` in the real archive's layout, from a synthetic benchmark of ``scale``."""
    import numpy as np
    from PIL import Image

    from data_download.cub import read_metadata
    from data_download.synthetic import generate

    source, _ = generate(work / "synthetic", images_per_class=scale.images_per_class, size=scale.size,
                         num_classes=scale.classes, workers=None if scale.classes > 20 else 1, progress=False)
    tree = work / "archive"
    cub = tree / "CUB_200_2011"
    shutil.copytree(source, cub, ignore=shutil.ignore_patterns(".data_download_complete.json"))
    meta = read_metadata(cub)
    last_of_class = np.r_[meta.class_ids[1:] != meta.class_ids[:-1], True]
    dropped = last_of_class & (meta.class_ids <= scale.short_classes)
    tables = {"images": [], "image_class_labels": [], "train_test_split": [], "bounding_boxes": []}
    for k, (rel, class_id, train, box) in enumerate(zip(meta.paths, meta.class_ids, meta.is_train, meta.boxes)):
        if dropped[k]:
            (cub / "images" / rel).unlink()
            continue
        image_id = len(tables["images"]) + 1         # CUB's ids run 1..N without gaps
        w, h = scale.shapes[k % len(scale.shapes)]
        with Image.open(cub / "images" / rel) as im:
            im = im.convert("L" if image_id % GREY_EVERY == 0 else "RGB").resize((w, h), Image.BICUBIC)
        im.save(cub / "images" / rel, quality=90)
        sx, sy = w / scale.size, h / scale.size
        tables["images"].append(f"{image_id} {rel}")
        tables["image_class_labels"].append(f"{image_id} {class_id}")
        tables["train_test_split"].append(f"{image_id} {int(train)}")
        tables["bounding_boxes"].append(f"{image_id} {box[0] * sx:.1f} {box[1] * sy:.1f} {box[2] * sx:.1f} "
                                        f"{box[3] * sy:.1f}")
    for name, lines in tables.items():
        (cub / f"{name}.txt").write_text("\n".join(lines) + "\n")
    meta = read_metadata(cub)
    # the real archive's other contents (not read by the book) and its stray top-level file
    (cub / "README").write_text("CUB-200-2011 stand-in made by scripts/make_cub_fixture.py from synthetic pictures.\n")
    (cub / "parts").mkdir()
    (cub / "parts" / "parts.txt").write_text("1 back\n2 beak\n")
    (cub / "parts" / "part_locs.txt").write_text("".join(f"{i} 1 0.0 0.0 0\n" for i in meta.image_ids.tolist()))
    (cub / "attributes").mkdir()
    (cub / "attributes" / "certainties.txt").write_text("1 not visible\n")
    (tree / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    assert np.isin(meta.class_ids, np.arange(1, scale.classes + 1)).all()
    return _tar_bytes(tree, lambda p: str(p.relative_to(tree)), compress=True)


def frn_archive(work: Path) -> bytes:
    """``trained_model_weights.tar`` holding FRN's CUB ResNet-12 checkpoint path, of a random model."""
    import torch

    from sfam_lite.models import FRN
    from sfam_lite.zoo import FRN_CUB_CHECKPOINT

    torch.manual_seed(0)
    path = work / "weights" / FRN_CUB_CHECKPOINT
    path.parent.mkdir(parents=True)
    torch.save(FRN(width=1.0).state_dict(), path)
    return _tar_bytes(work / "weights", lambda p: str(p.relative_to(work / "weights")), compress=False)


def make(root: str | Path, scale: str = "small") -> tuple[Path, Path]:
    """Write the fixture of ``scale`` (a key of :data:`SCALES`) under ``root``; return ``(data_root,
    weights_root)`` as the chapters take them."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {sorted(SCALES)}.")
    from data_download.resources import CUB200_ARCHIVE, FRN_WEIGHTS
    root = Path(root).resolve()
    data_root, weights_root = root / "cub200", root / "frn"
    for old in (data_root, weights_root):
        shutil.rmtree(old, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _install(CUB200_ARCHIVE, cub_archive(Path(tmp), SCALES[scale]), data_root)
        _install(FRN_WEIGHTS, frn_archive(Path(tmp)), weights_root)
    return data_root, weights_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder that receives cub200/ and frn/")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small",
                        help="small: 340 images for CI (default); cub: CUB's 200 classes and 11,788 images")
    args = parser.parse_args(argv)
    data_root, weights_root = make(args.root, args.scale)
    print(f"data_root={data_root}\nweights_root={weights_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
