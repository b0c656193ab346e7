"""The CUB reader: metadata parsing and its errors, the three split families, the dataset class."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_download import CUB200, SPLITS, DataError, DatasetNotFoundError, ResizeCropFlip, SyntheticCUB200
from data_download import read_metadata, split_classes, transform_boxes
from data_download.publish import MARKER

NAMES = [f"{i:03d}.Bird_{i}" for i in range(1, 201)]


def write_cub(root, classes=4, per_class=3, size=(60, 40), marker=True, edit=None):
    """A small CUB folder written by hand: ``per_class`` solid-colour JPEGs per class, boxes known."""
    folder = root / "CUB_200_2011"
    (folder / "images").mkdir(parents=True)
    lines = {k: [] for k in ("images", "classes", "image_class_labels", "train_test_split", "bounding_boxes")}
    image_id = 0
    for c in range(1, classes + 1):
        lines["classes"].append(f"{c} {NAMES[c - 1]}")
        (folder / "images" / NAMES[c - 1]).mkdir()
        for k in range(per_class):
            image_id += 1
            rel = f"{NAMES[c - 1]}/img_{image_id}.jpg"
            Image.new("RGB", size, (40 * c, 10 * k, 100)).save(folder / "images" / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["image_class_labels"].append(f"{image_id} {c}")
            lines["train_test_split"].append(f"{image_id} {int(k % 2 == 0)}")
            lines["bounding_boxes"].append(f"{image_id} {k + 1}.0 {c}.5 20.0 {10 + k}.0")
    if edit:
        edit(lines)
    for name, rows in lines.items():
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n")
    if marker:
        (folder / MARKER).write_text(json.dumps({"name": "test"}))
    return folder


# ------------------------------------------------------------------------------------------------ splits

def test_frn_split_is_fewshot_100_50_50():
    train, val, test = (split_classes(s) for s in ("frn_train", "frn_val", "frn_test"))
    assert (len(train), len(val), len(test)) == (100, 50, 50)
    assert sorted(train + val + test) == list(range(1, 201))
    assert train[:3] == [2, 4, 6] and val[:3] == [1, 5, 9] and test[:3] == [3, 7, 11]


def chen_split_from_folder_listing(names: list[str]) -> dict[str, set[int]]:
    """Chen et al.'s rule as their script applies it: enumerate the *sorted folder names* from 0;
    index % 2 == 0 → base, % 4 == 1 → val, % 4 == 3 → novel. Class ids are read from the names."""
    out = {"chen_base": set(), "chen_val": set(), "chen_novel": set()}
    for i, folder in enumerate(sorted(names)):
        cid = int(folder.split(".")[0])
        if i % 2 == 0:
            out["chen_base"].add(cid)
        if i % 4 == 1:
            out["chen_val"].add(cid)
        if i % 4 == 3:
            out["chen_novel"].add(cid)
    return out


def test_chen_split_matches_the_folder_listing_rule():
    shuffled = list(np.random.default_rng(0).permutation(NAMES))
    for name, ids in chen_split_from_folder_listing(shuffled).items():
        assert set(split_classes(name)) == ids
    assert [len(split_classes(s)) for s in ("chen_base", "chen_val", "chen_novel")] == [100, 50, 50]


def test_chen_novel_classes_are_frn_training_classes():
    """Chen's novel classes are all FRN training classes, so FRN's checkpoints have seen them."""
    assert set(split_classes("chen_novel")) <= set(split_classes("frn_train"))
    assert set(split_classes("frn_test")) <= set(split_classes("chen_base"))


def test_retrieval_split():
    assert split_classes("retrieval_train") == list(range(1, 101))
    assert split_classes("retrieval_test") == list(range(101, 201))
    assert split_classes("retrieval_test", 8) == [5, 6, 7, 8]


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="frn_test"):
        split_classes("fewshot")
    assert set(SPLITS) >= {"frn_train", "chen_novel", "retrieval_test"}


def test_unknown_split_fails_before_any_download(tmp_path, monkeypatch):
    def no_download(self):
        raise AssertionError("downloaded although the split is unknown")
    monkeypatch.setattr(CUB200, "_download", no_download)
    with pytest.raises(ValueError, match="Unknown split 'fewshot'"):
        CUB200(tmp_path, split="fewshot", download=True)


# ---------------------------------------------------------------------------------------------- metadata

def test_metadata_is_read_in_order(tmp_path):
    meta = read_metadata(write_cub(tmp_path))
    assert meta.image_ids.tolist() == list(range(1, 13))
    assert meta.class_ids.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert meta.boxes[4].tolist() == [2.0, 2.5, 20.0, 11.0]
    assert meta.is_train.tolist()[:3] == [True, False, True]
    assert meta.class_names[3] == "003.Bird_3"


def replace_line(file: str, index: int, text: str):
    def edit(lines):
        lines[file][index] = text
    return edit


@pytest.mark.parametrize("file, index, text, message", [
    ("bounding_boxes", 1, "2 1.0 2.0 20.0", r"bounding_boxes.txt, line 2: expected 5 fields"),
    ("bounding_boxes", 2, "3 1.0 2.0 x 4.0", r"bounding_boxes.txt, line 3: cannot read"),
    ("bounding_boxes", 0, "1 1.0 2.0 nan 4.0", r"bounding_boxes.txt, line 1: non-finite"),
    ("images", 3, "4", r"images.txt, line 4: expected 2 fields"),
    ("image_class_labels", 0, "1 one", r"image_class_labels.txt, line 1: cannot read"),
    ("train_test_split", 5, "6 1 1", r"train_test_split.txt, line 6: expected 2 fields"),
    ("classes", 1, "two 002.Bird_2", r"classes.txt, line 2: cannot read"),
    ("bounding_boxes", 1, "1 1.0 2.0 3.0 4.0", r"bounding_boxes.txt: image id 1 appears twice"),
    ("image_class_labels", 0, "1 9", r"class ids \[9\]"),
    ("train_test_split", 0, "1 2", r"is_train must be 0 or 1"),
    ("bounding_boxes", 0, "1 1.0 2.0 0.0 4.0", r"image id 1 has a box of zero"),
    ("images", 0, "99 001.Bird_1/img_1.jpg", r"missing ids \[99\]"),
])
def test_malformed_metadata_names_file_and_line(tmp_path, file, index, text, message):
    folder = write_cub(tmp_path, edit=replace_line(file, index, text))
    with pytest.raises(DataError, match=message):
        read_metadata(folder)


def test_missing_metadata_file(tmp_path):
    folder = write_cub(tmp_path)
    (folder / "bounding_boxes.txt").unlink()
    with pytest.raises(DataError, match="bounding_boxes.txt is missing"):
        CUB200(tmp_path)


# ----------------------------------------------------------------------------------------------- dataset

def test_dataset_returns_image_label_box(tmp_path):
    write_cub(tmp_path)
    ds = CUB200(tmp_path)
    assert len(ds) == 12
    image, label, box = ds[4]
    assert isinstance(image, Image.Image) and image.size == (60, 40)
    assert label == 1 and ds.class_name(label) == "002.Bird_2"
    assert box.dtype == torch.float32 and box.tolist() == [2.0, 2.5, 20.0, 11.0]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_box_follows_a_box_aware_transform(tmp_path):
    write_cub(tmp_path)
    t = ResizeCropFlip(32, 30, flip=True, then=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1))
    image, _, box = CUB200(tmp_path, transform=t)[5]
    assert image.shape == (3, 30, 30)
    expected = transform_boxes(np.array([3.0, 2.5, 20.0, 12.0]), (60, 40), 32, 30, True)
    np.testing.assert_allclose(box.numpy(), expected, rtol=1e-6)


def test_transformed_boxes_equal_the_items_boxes_without_decoding_an_image(tmp_path):
    def edit(lines):   # images of several sizes, so that each box moves differently
        for k, row in enumerate(lines["images"]):
            if k % 3 == 1:
                Image.new("RGB", (37, 71), (9, 9, 9)).save(tmp_path / "CUB_200_2011" / "images" / row.split()[1])
    write_cub(tmp_path, edit=edit)
    t = ResizeCropFlip(32, 30, to_tensor=True)
    want = torch.stack([item[2] for item in CUB200(tmp_path, transform=t)])

    def refuse(path):
        raise AssertionError(f"decoded {path}")
    got = CUB200(tmp_path, loader=refuse).transformed_boxes(t)
    assert torch.equal(got, want) and got.dtype == torch.float32
    assert not torch.equal(want[0:1].expand(3, 4), want[0:3])          # the sizes did move the boxes differently
    with pytest.raises(TypeError, match="cannot move boxes"):
        CUB200(tmp_path).transformed_boxes(lambda im: im)


def test_plain_transform_leaves_the_box_alone(tmp_path):
    write_cub(tmp_path)
    image, _, box = CUB200(tmp_path, transform=lambda im: im.resize((10, 10)))[0]
    assert image.size == (10, 10) and box.tolist() == [1.0, 1.5, 20.0, 10.0]


@pytest.mark.parametrize("split, ids", [("train", [1, 3, 4, 6, 7, 9, 10, 12]), ("test", [2, 5, 8, 11]),
                                        ("retrieval_test", [7, 8, 9, 10, 11, 12]), ("frn_test", [7, 8, 9]),
                                        ("chen_novel", [10, 11, 12])])
def test_splits_select_images(tmp_path, split, ids):
    write_cub(tmp_path)
    ds = CUB200(tmp_path, split=split)
    assert ds.image_ids.tolist() == ids


@pytest.mark.parametrize("cls, command", [(CUB200, "cub200"), (SyntheticCUB200, "synthetic")])
def test_missing_dataset_prints_the_command(tmp_path, cls, command):
    with pytest.raises(DatasetNotFoundError) as err:
        cls(tmp_path / "nowhere")
    assert f"python -m data_download {command} --root {tmp_path / 'nowhere'}" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_incomplete_dataset_is_refused(tmp_path):
    write_cub(tmp_path, marker=False)
    with pytest.raises(DatasetNotFoundError, match="incomplete"):
        CUB200(tmp_path)


def test_unreadable_image_names_the_file(tmp_path):
    folder = write_cub(tmp_path)
    (folder / "images" / NAMES[0] / "img_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="img_1.jpg"):
        CUB200(tmp_path)[0]


def test_dataset_is_a_vision_dataset_with_one_loader(tmp_path):
    from torchvision.datasets import VisionDataset
    write_cub(tmp_path)
    seen = []

    def loader(path):
        seen.append(str(path).split("/")[-1])
        return Image.new("RGB", (8, 6))
    ds = CUB200(tmp_path, split="train", loader=loader)
    assert isinstance(ds, VisionDataset) and "Split: train" in repr(ds)
    assert ds[1][0].size == (8, 6) and seen == [ds.paths[1].split("/")[-1]]
    assert ds.index_of(ds.image_ids[[2, 0]]) == [2, 0]
    with pytest.raises(KeyError, match="not in the 'train' split"):
        ds.index_of([10_000])


def test_box_follows_a_torchvision_v2_transform(tmp_path):
    from torchvision.transforms import v2
    write_cub(tmp_path)
    image, _, box = CUB200(tmp_path, transform=v2.Compose([v2.PILToTensor(), v2.Resize(32), v2.CenterCrop(30)]))[5]
    assert image.shape == (3, 30, 30) and box.dtype == torch.float32
    expected = transform_boxes(np.array([3.0, 2.5, 20.0, 12.0]), (60, 40), 32, 30)
    np.testing.assert_allclose(box.numpy(), expected, atol=1e-5)


def test_eval_transform_can_be_the_dataset_transform(tmp_path):
    """The evaluation transform takes the loader's PIL image (normalising a tensor made from it)."""
    from sfam_lite.transforms import eval_transform
    write_cub(tmp_path)
    t = eval_transform(28)
    image, _, box = CUB200(tmp_path, transform=t)[5]
    raw = CUB200(tmp_path)[5][0]
    assert torch.equal(image, t(torch.from_numpy(np.array(raw)).permute(2, 0, 1)))
    assert image.dtype == torch.float32 and image.shape == (3, 28, 28)
    np.testing.assert_allclose(box.numpy(), transform_boxes(np.array([3.0, 2.5, 20.0, 12.0]), (60, 40), 31, 28),
                               atol=1e-5)
