"""The synthetic benchmark: CUB layout, determinism, tight boxes, class structure, the properties
chapter 3 measures (box sizes, centre priors, evidence only in the box, shared colours), the command."""
from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_download import DataError, ResizeCropFlip, SyntheticCUB200, read_metadata
from data_download import synthetic
from data_download.publish import MARKER
from helpers import file_size_limit
from sfam_lite import controls

SMALL = dict(images_per_class=16, size=48, num_classes=40)      # 5 genera, 640 images


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, **SMALL, workers=1, progress=False)
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cub_layout(small):
    folder = small / "CUB_200_2011"
    meta = read_metadata(folder)
    assert len(meta.image_ids) == 640 and len(meta.class_names) == 40
    assert (folder / MARKER).exists()
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(meta.class_names.values())
    assert meta.paths[0].startswith(meta.class_names[1] + "/") and meta.paths[0].endswith(".jpg")
    assert meta.is_train.mean() == 0.5
    ds = SyntheticCUB200(small, split="frn_test")
    image, label, box = ds[0]
    assert image.size == (48, 48) and (label + 1) % 4 == 3
    assert 0 <= box[0] and box[0] + box[2] <= 48 and 0 <= box[1] and box[1] + box[3] <= 48


def test_deterministic_for_a_seed_and_any_number_of_workers(small, tmp_path):
    synthetic.generate(tmp_path / "again", **SMALL, workers=2, progress=False)
    assert tree_digest(tmp_path / "again" / "CUB_200_2011") == tree_digest(small / "CUB_200_2011")


def test_seed_changes_the_images_but_not_the_layout():
    a = synthetic.render_image(5, synthetic.Params(**SMALL, seed=0))
    b = synthetic.render_image(5, synthetic.Params(**SMALL, seed=1))
    assert not np.array_equal(a[0], b[0])
    assert synthetic.class_specs(40, 0) != synthetic.class_specs(40, 1)


def test_stored_boxes_are_the_rendered_ones_and_tight(small):
    """Every pixel the bird changes lies inside the stored box, and the bird reaches each side of it."""
    params = synthetic.read_params(small)
    meta = read_metadata(small / "CUB_200_2011")
    specs = synthetic.class_specs(params.num_classes, params.seed)
    for image_id in range(1, 641, 29):
        image, bg, box = synthetic.render_image(image_id, params, specs)
        np.testing.assert_allclose(meta.boxes[image_id - 1], box, atol=1e-6)
        rows, cols = np.nonzero(np.abs(image.astype(int) - bg.astype(int)).max(-1) > 8)
        x, y, w, h = box
        assert cols.min() >= np.floor(x) and cols.max() + 1 <= np.ceil(x + w)
        assert rows.min() >= np.floor(y) and rows.max() + 1 <= np.ceil(y + h)
        assert abs(cols.min() - x) <= 1.5 and abs(cols.max() + 1 - (x + w)) <= 1.5
        assert abs(rows.min() - y) <= 1.5 and abs(rows.max() + 1 - (y + h)) <= 1.5


def test_background_does_not_depend_on_the_class():
    """The same image id drawn as two different classes has the same background and the same box
    position distribution input: only the bird changes."""
    specs = synthetic.class_specs(16, 0)
    pose, scene = synthetic.image_rngs(0, 7)
    _, bg1, _ = synthetic.render(specs[0], 64, pose, scene)
    pose, scene = synthetic.image_rngs(0, 7)
    _, bg2, _ = synthetic.render(specs[9], 64, pose, scene)
    assert np.array_equal(bg1, bg2)


def differing(a: dict, b: dict) -> set[str]:
    return {k for k in synthetic.ATTRIBUTES if a[k] != b[k]}


def test_classes_are_distinct_and_come_in_one_part_pairs():
    specs = synthetic.class_specs(200, 0)
    assert len({tuple(s[a] for a in synthetic.ATTRIBUTES) for s in specs}) == 200
    assert len({s["name"] for s in specs}) == 200
    for g in range(25):
        genus = specs[8 * g: 8 * g + 8]
        for j, k in itertools.combinations(range(8), 2):
            diff = differing(genus[j], genus[k])
            if j % 4 == k % 4:
                assert diff == {genus[j]["varies"]}           # e.g. classes 3 and 7: one part apart
            else:
                assert len(diff) == 2
    # FRN's test split (ids 3, 7 mod 8) holds one-part pairs
    assert len(differing(specs[2], specs[6])) == 1


def test_box_sizes_and_centre_priors_at_the_default_parameters():
    """Chapter 3's box-size and centre-prior checks at the default size (8,000 boxes, computed without drawing): area 15–50 %,
    median 25–35 %; the centred mean-size box localises fewer than 35 %; the same after FRN's
    Resize(92) + CenterCrop(84)."""
    boxes = synthetic.boxes(synthetic.Params())
    frn = ResizeCropFlip(92, 84).transform_box(boxes, (96, 96))
    for b, side in ((boxes, 96), (frn, 84)):
        stats = controls.box_statistics(b, (side, side))
        assert stats["in_15_50"] == 1.0 and 0.25 <= stats["median"] <= 0.35, stats
        priors = controls.centre_priors(b, (side, side))
        assert priors["centre_box"] < 0.35 and max(priors["gaussian"].values()) < 0.35, priors


def test_centre_prior_is_computed_like_the_protocol():
    """A centred box of the mean size scores 1 on boxes that are exactly that box, 0 on far corners."""
    boxes = np.array([[30, 30, 36, 36]] * 4 + [[0, 0, 20, 20]] * 4, float)
    priors = controls.centre_priors(boxes, (96, 96))
    assert priors["centre_box"] == 0.5
    assert priors["centre_box_xywh"] == [(96 - 28) / 2, (96 - 28) / 2, 28, 28]


def test_centre_priors_are_the_references_maps():
    """The centre box is the box of :class:`CentreBoxMap`'s pixels (a 27 × 21 box centred in a 96 × 80 image covers
    whole pixels 34..60 and 29..49), and each Gaussian is :class:`CentredGaussianMap` of the reference σ grid."""
    from sfam_lite.localization import boxes_from_maps, iou
    from sfam_lite.references import GAUSSIAN_SIGMAS, CentredGaussianMap
    boxes = np.array([[5, 7, 25, 20], [60, 50, 29, 22], [30, 25, 27, 21]], float)
    priors = controls.centre_priors(boxes, (80, 96))
    assert priors["centre_box_xywh"] == [34, 29, 27, 21]
    assert priors["centre_box_mean_iou"] == pytest.approx(iou(np.array([34, 29, 27, 21.0]), boxes).mean())
    assert list(priors["gaussian"]) == list(GAUSSIAN_SIGMAS)
    for s, accuracy in priors["gaussian"].items():
        g = boxes_from_maps(CentredGaussianMap(s).maps(1, (80, 96), None), 0.2)[0]
        assert accuracy == np.mean(iou(g, boxes) >= 0.5)


def test_centre_point_map_points_at_the_pixels_nearest_the_centre():
    """Chapter 3's and 4's centre point: the central 2 pixels of an even side, 1 of an odd one; its pointing game
    is won by a box that holds the top-left of them and lost by one that ends half a pixel before it."""
    import torch
    from sfam_lite.metrics import pointing_game
    from sfam_lite.references import centre_point_map
    assert torch.nonzero(centre_point_map((6, 5))).tolist() == [[2, 2], [3, 2]]
    m = centre_point_map((84, 84))
    assert torch.nonzero(m).tolist() == [[41, 41], [41, 42], [42, 41], [42, 42]]
    boxes = torch.tensor([[0, 0, 41.6, 41.6], [0, 0, 41.5, 41.5], [42, 42, 10, 10]], dtype=torch.float64)
    assert pointing_game(m.expand(3, 84, 84), boxes).tolist() == [True, False, False]

def test_evidence_is_only_inside_the_box(small):
    """Control (a) in a reduced configuration: 5 classes from 5 genera, 8 train / 8 test images each."""
    result = controls.evidence_control(small, class_ids=[1, 10, 19, 28, 37], epochs=40, input_size=48, width=16,
                                       threads=1)
    assert result["test_images"] == 40 and result["chance"] == 0.2
    assert result["normal"] >= 0.7, result
    assert result["box_filled"] <= 0.4, result


def test_box_filling_removes_the_bird_only(small):
    normal, filled = controls.evidence_examples(small, [1, 2])
    ds = SyntheticCUB200(small)
    for k in range(2):
        x, y, w, h = ds.boxes[k].tolist()
        inside = np.zeros((48, 48), bool)
        inside[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
        diff = (normal[k].int() - filled[k].int()).abs().amax(0).numpy()
        assert (diff[~inside] == 0).all() and diff[inside].mean() > 10


def test_backgrounds_share_some_but_not_all_bird_colours():
    result = controls.colour_overlap(synthetic.Params(**SMALL), n_images=40)
    assert {"brown", "grey", "olive"} <= set(result["shared"])
    assert {"red", "blue", "black"} <= set(result["not_shared"])
    assert 0.2 < result["bird_pixels_shared"] < 0.8


# ---------------------------------------------------------------------------------------------- command

def cli(*args, preexec=None):
    return subprocess.run([sys.executable, "-m", "data_download", "synthetic", *args, "--quiet"],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def test_command_generates_then_does_nothing_then_refuses_other_parameters(tmp_path):
    args = ["--root", str(tmp_path), "--classes", "8", "--images-per-class", "2", "--size", "48", "--workers", "1"]
    first = cli(*args)
    assert first.returncode == 0 and "complete" in first.stdout, first.stderr
    assert len(read_metadata(tmp_path / "CUB_200_2011").image_ids) == 16
    second = cli(*args)
    assert second.returncode == 0 and "already complete; nothing to do" in second.stdout
    third = cli(*args, "--seed", "3")
    assert third.returncode == 1 and "other parameters" in third.stderr


def test_invalid_parameters(tmp_path):
    with pytest.raises(DataError, match="images_per_class"):
        synthetic.generate(tmp_path, images_per_class=1, progress=False)
    out = cli("--root", str(tmp_path), "--classes", "0")
    assert out.returncode == 1 and "num_classes" in out.stderr



def test_full_disk_leaves_nothing(tmp_path):
    out = cli("--root", str(tmp_path), "--classes", "8", "--images-per-class", "2", "--size", "96",
              "--workers", "1", preexec=file_size_limit(1500))   # a 96 px JPEG is larger
    assert out.returncode == 1 and "disk is full" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_class_index_matches_the_written_labels(tmp_path):
    params = synthetic.Params(images_per_class=3, num_classes=4)
    assert [synthetic.class_index(i, params) for i in range(1, 13)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
