"""The generator's counterfactual images (chapter 10): two-bird scenes with their one-bird versions, and a bird
redrawn with its sibling's part in its own outline. Each check reads the pixels against the boxes, not the
generator's own bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest

from data_download import synthetic

SPECS = synthetic.class_specs(40, 0)


def pixel_box(box, size):
    """Bool mask of the pixels a box ``x y w h`` touches (rounded outwards to whole pixels)."""
    x, y, w, h = box
    mask = np.zeros((size, size), bool)
    mask[max(0, int(np.floor(y))):int(np.ceil(y + h)), max(0, int(np.floor(x))):int(np.ceil(x + w))] = True
    return mask


def changed(a, b):
    return (a != b).any(-1)


def scene(scene_id, size=96, a=0, b=9):
    return synthetic.render_two(SPECS[a], SPECS[b], size, *synthetic.scene_rngs(0, scene_id))


@pytest.mark.parametrize("size", [96, 48, 97])
def test_boxes_lie_in_their_halves_and_do_not_overlap(size):
    half = size // 2
    for scene_id in range(40):
        t = scene(scene_id, size, a=scene_id % 40, b=(7 * scene_id + 3) % 40)
        (xa, ya, wa, ha), (xb, yb, wb, hb) = t.box_a, t.box_b
        assert 0 <= xa and xa + wa <= half and half <= xb and xb + wb <= size
        assert 0 <= ya and ya + ha <= size and 0 <= yb and yb + hb <= size
        assert wa > 0 and ha > 0 and wb > 0 and hb > 0
        assert not (pixel_box(t.box_a, size) & pixel_box(t.box_b, size)).any()


@pytest.mark.parametrize("size", [96, 97])
def test_each_one_bird_image_differs_from_the_scene_only_inside_the_removed_birds_box(size):
    half = size // 2
    for scene_id in range(25):
        t = scene(scene_id, size)
        for one_bird, removed, kept in ((t.only_a, t.box_b, t.box_a), (t.only_b, t.box_a, t.box_b)):
            diff = changed(one_bird, t.scene)
            inside = pixel_box(removed, size)
            assert not diff[~inside].any()                # outside the removed bird: the very same pixels
            assert diff[inside].mean() > 0.2              # inside: the bird is gone
            assert not (diff & pixel_box(kept, size)).any()
            # the removed bird reaches each side of its box (the box is tight, within 1.5 px)
            rows, cols = np.nonzero(diff)
            x, y, w, h = removed
            assert abs(cols.min() - x) <= 1.5 and abs(cols.max() + 1 - (x + w)) <= 1.5
            assert abs(rows.min() - y) <= 1.5 and abs(rows.max() + 1 - (y + h)) <= 1.5
        assert not changed(t.only_a, t.scene)[:, :half].any() and not changed(t.only_b, t.scene)[:, half:].any()


def test_the_background_is_the_scene_without_either_bird():
    for scene_id in range(10):
        t = scene(scene_id)
        birds = pixel_box(t.box_a, 96) | pixel_box(t.box_b, 96)
        assert np.array_equal(t.background[~birds], t.scene[~birds])
        assert not changed(t.background, t.only_a)[~pixel_box(t.box_a, 96)].any()
        assert not changed(t.background, t.only_b)[~pixel_box(t.box_b, 96)].any()
        # every pixel of the scene is the pixel of one of the one-bird images
        assert ((t.scene == t.only_a).all(-1) | (t.scene == t.only_b).all(-1)).all()


def test_same_streams_same_scene_other_streams_other_scene():
    a, b = scene(3), scene(3)
    for field in ("scene", "only_a", "only_b", "background", "box_a", "box_b"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    c = scene(4)
    assert not np.array_equal(a.background, c.background) and not np.array_equal(a.box_a, c.box_a)
    one_bird, *_ = synthetic.render(SPECS[0], 96, *synthetic.image_rngs(0, 3))
    assert not np.array_equal(one_bird, a.only_a)          # a scene's streams are not an image's


def test_swapping_the_species_keeps_background_poses_and_places():
    """The same streams with A and B exchanged: the same background, and the left bird keeps its vertical
    place (its pose comes first from the pose stream whichever species it is)."""
    ab, ba = scene(5, a=0, b=9), scene(5, a=9, b=0)
    assert np.array_equal(ab.background, ba.background)
    assert not np.array_equal(ab.scene, ba.scene)


def siblings(part):
    """The first class of SPECS whose species differs from its sibling in ``part``, and the sibling."""
    for spec in SPECS:
        if spec["varies"] == part:
            sib = [s for s in SPECS if s["genus"] == spec["genus"] and s["varies"] == part
                   and s["class_id"] != spec["class_id"]]
            if sib:
                return spec, sib[0]
    raise LookupError(part)


@pytest.mark.parametrize("part", ["tail", "beak", "body", "mark", "pattern"])
def test_a_sibling_drawn_in_the_birds_outline_differs_on_the_part_only(part):
    spec, sib = siblings(part)
    assert {a for a in synthetic.ATTRIBUTES if spec[a] != sib[a]} == {part}
    for image_id in (1, 2, 3):
        own, bg, box = synthetic.render(spec, 96, *synthetic.image_rngs(0, image_id))
        again, bg_again, box_again = synthetic.render(spec, 96, *synthetic.image_rngs(0, image_id), frame=spec)
        assert np.array_equal(own, again) and np.array_equal(box, box_again)
        other, bg_other, box_other = synthetic.render(sib, 96, *synthetic.image_rngs(0, image_id), frame=spec)
        rescaled, _, _ = synthetic.render(sib, 96, *synthetic.image_rngs(0, image_id))
        assert np.array_equal(bg, bg_other)
        diff = changed(own, other)
        bird = changed(own, bg) | changed(other, bg)
        assert diff.any() and not diff[~bird].any()           # only bird pixels change ...
        assert diff.sum() < 0.4 * changed(own, bg).sum()     # ... and only a part of the bird
        assert not diff[~(pixel_box(box, 96) | pixel_box(box_other, 96))].any()
        if part in ("tail", "beak"):                          # its own outline would move every part
            assert changed(own, rescaled).sum() > 2 * diff.sum()


def test_the_default_pose_box_is_unchanged_by_the_frame_argument():
    """The boxes of a benchmark (computed without drawing) are the boxes render draws, frame or not."""
    params = synthetic.Params(images_per_class=4, size=48, num_classes=16)
    boxes = synthetic.boxes(params)
    for image_id in (1, 17, 40):
        spec = SPECS[synthetic.class_index(image_id, params)]
        _, _, box = synthetic.render(spec, 48, *synthetic.image_rngs(0, image_id), frame=spec)
        assert np.array_equal(box, boxes[image_id - 1])
