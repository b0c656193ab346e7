"""eval_set keeps images and boxes in step: rectangles drawn into images land where the transformed boxes say."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_download import CUB200
from data_download.publish import MARKER
from sfam_lite.evaluation import eval_set
from sfam_lite.train import IMAGENET_MEAN, IMAGENET_STD


def drawn_boxes(folder, boxes, sizes=((96, 72),)) -> CUB200:
    """A CUB folder whose image k is black with a white rectangle exactly at boxes[k] (x, y, w, h), one class each."""
    cub = folder / "CUB_200_2011"
    (cub / "images" / "001.Drawn").mkdir(parents=True)
    tables = {name: [] for name in ("images", "classes", "image_class_labels", "train_test_split", "bounding_boxes")}
    for k, (x, y, w, h) in enumerate(boxes, start=1):
        size = sizes[(k - 1) % len(sizes)]
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        pixels[y:y + h, x:x + w] = 255
        Image.fromarray(pixels).save(cub / "images" / "001.Drawn" / f"{k}.png")
        tables["images"].append(f"{k} 001.Drawn/{k}.png")
        tables["image_class_labels"].append(f"{k} 1")
        tables["train_test_split"].append(f"{k} 0")
        tables["bounding_boxes"].append(f"{k} {x} {y} {w} {h}")
    tables["classes"].append("1 001.Drawn")
    for name, lines in tables.items():
        (cub / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (cub / MARKER).write_text(json.dumps({"name": "drawn"}))
    return CUB200(folder)


@pytest.mark.parametrize("image_size, sizes", [(48, ((96, 72),)), (80, ((96, 72),)),
                                               (64, ((96, 72), (120, 90), (100, 140), (97, 73)))])
def test_boxes_follow_the_images(tmp_path, image_size, sizes):
    """Also with images of different sizes, as CUB's are."""
    boxes = [(10, 8, 30, 20), (50, 30, 40, 40), (0, 0, 96, 72), (30, 5, 12, 60)]
    dataset = drawn_boxes(tmp_path, boxes, sizes)
    data = eval_set(dataset, image_size)
    assert dataset.transform is None and data.labels.tolist() == [0] * 4
    assert data.images.shape == (4, 3, image_size, image_size)
    red = data.images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]    # back to [0, 1]
    for k in range(4):
        rows, cols = torch.nonzero(red[k] > 0.5, as_tuple=True)
        drawn = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        np.testing.assert_allclose([v.item() for v in drawn], data.boxes[k].tolist(), atol=1.0)


def test_forward_with_features_names_a_layer_that_did_not_run():
    from torch import nn

    from sfam_lite.evaluation import forward_with_features
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    unused = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="did not run"):
        forward_with_features(model, unused, torch.rand(2, 3, 8, 8))
    outputs, maps = forward_with_features(model, model[0], torch.rand(5, 3, 8, 8), batch=2)
    assert outputs.shape == maps.shape == (5, 4, 6, 6) and torch.equal(outputs, maps.clamp_min(0))


def test_eval_set_takes_the_recipe_view(tmp_path):
    """gpw-cub's recipe view (resize 256, crop 227) on a 300 × 240 image: the box is scaled by 256/240, then the
    crop removes (320 - 227) / 2 ≈ 46 and (256 - 227) / 2 ≈ 14 pixels (torchvision rounds the offsets)."""
    from sfam_lite import zoo
    data = eval_set(drawn_boxes(tmp_path, [(60, 50, 120, 90)], ((300, 240),)), zoo.eval_transform_for("gpw-cub"))
    assert data.images.shape == (1, 3, 227, 227)
    scale = 256 / 240
    np.testing.assert_allclose(data.boxes[0].tolist(), [60 * scale - 46, 50 * scale - 14, 120 * scale, 90 * scale],
                               rtol=1e-6)


def test_forward_with_features_does_not_train_batchnorm():
    """A model left in train mode: its BatchNorm statistics stay as they were, each image's features do not depend
    on the batch it is in, and every module gets its own mode back. Silently wrong before: the running statistics
    moved with every evaluation batch and the features were batch-normalised with the batch's own statistics."""
    from torch import nn

    from sfam_lite.evaluation import forward_with_features
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_mean.fill_(0.3)
    model.train()
    model[2].eval()                                    # a mixed state, to be given back as it was
    before = model[1].running_mean.clone()
    images = torch.rand(6, 3, 8, 8)
    _, maps = forward_with_features(model, model[1], images, batch=2)
    _, alone = forward_with_features(model, model[1], images[:1], batch=1)
    assert torch.equal(model[1].running_mean, before)
    assert torch.allclose(maps[:1], alone, atol=1e-6)
    expected = (nn.functional.conv2d(images, model[0].weight, model[0].bias) - before[None, :, None, None]) \
        / torch.sqrt(model[1].running_var + model[1].eps)[None, :, None, None] * model[1].weight[None, :, None, None] \
        + model[1].bias[None, :, None, None]
    assert torch.allclose(maps, expected, atol=1e-5)
    assert [m.training for m in model] == [True, True, False]


def _reference_images(dataset, transform) -> torch.Tensor:
    """Each image through the full float transform on its own, as the dataset gives it: no uint8 storage."""
    import copy
    view = copy.copy(dataset)
    view.transform = transform
    return torch.stack([view[k][0] for k in range(len(view))])


@pytest.mark.parametrize("size", [227, 64])
def test_eval_set_keeps_uint8_pixels_and_reads_the_same_floats(tmp_path, size):
    """The images are held as one byte per value (the memory property at CUB's scale: 5,924 images at 227 px in
    0.9 GB, not 3.7 GB), and every way of reading them gives exactly the floats of the full transform."""
    from sfam_lite import zoo
    from sfam_lite.evaluation import NormalisedImages
    from sfam_lite.transforms import eval_transform
    view = zoo.eval_transform_for("gpw-cub") if size == 227 else eval_transform(size)
    dataset = drawn_boxes(tmp_path, [(10, 8, 30, 20), (50, 30, 40, 40), (0, 0, 96, 72)],
                          ((300, 240), (96, 72), (120, 170)))
    data = eval_set(dataset, view)
    ref = _reference_images(dataset, view)
    assert isinstance(data.images, NormalisedImages) and data.images.pixels.dtype == torch.uint8
    assert data.images.pixels.nbytes == len(dataset) * 3 * size * size          # one byte per value, nothing more
    assert data.images.shape == ref.shape and len(data.images) == 3 and data.images.dtype == ref.dtype
    assert torch.equal(data.images.tensor(), ref)
    assert torch.equal(data.images[1], ref[1]) and torch.equal(data.images[torch.tensor(2)], ref[2])
    assert torch.equal(data.images[[2, 0]], ref[[2, 0]]) and torch.equal(data.images[torch.tensor([1, 1])], ref[[1, 1]])
    assert torch.equal(data.images[1:3, 0], ref[1:3, 0]) and torch.equal(data.images[0, 2, 5], ref[0, 2, 5])
    assert torch.equal(data.images.to("cpu")[:2], ref[:2])


def test_eval_set_keeps_other_transforms_output_as_it_is(tmp_path):
    """A transform that does not end in the book's normalisation: its output is stored as it comes."""
    from torchvision.transforms import v2
    transform = v2.Compose([v2.PILToTensor(), v2.Resize((32, 32)), v2.ToDtype(torch.float32, scale=True)])
    dataset = drawn_boxes(tmp_path, [(10, 8, 30, 20), (50, 30, 40, 40)])
    data = eval_set(dataset, transform)
    assert isinstance(data.images, torch.Tensor) and data.images.dtype == torch.float32
    assert torch.equal(data.images, _reference_images(dataset, transform))


def test_forward_with_features_reads_uint8_images_batch_by_batch(tmp_path):
    """The same outputs and maps from the uint8 store as from the float tensor, whatever the batch size."""
    from torch import nn

    from sfam_lite.evaluation import forward_with_features
    dataset = drawn_boxes(tmp_path, [(10, 8, 30, 20), (50, 30, 40, 40), (0, 0, 96, 72), (30, 5, 12, 60)])
    data = eval_set(dataset, 32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    out, maps = forward_with_features(model, model[1], data.images, batch=3)
    ref = data.images.tensor()
    from_floats = forward_with_features(model, model[1], ref, batch=3)
    assert torch.equal(out, from_floats[0]) and torch.equal(maps, from_floats[1])
    with torch.no_grad():              # and against the model run on all at once (float noise from the batching)
        assert torch.allclose(out, model(ref), atol=1e-6) and torch.allclose(maps, torch.relu(model[0](ref)), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        forward_with_features(model, model[1], ref[:0])


def test_few_shot_decisions_do_not_depend_on_how_many_episodes_are_solved_at_once():
    """The default chunk keeps FRN's full-width solve within its memory budget (it held 3.2 GB at 50 episodes), and
    every decision equals the one made episode by episode."""
    from sfam_lite.evaluation import episodes_per_solve, few_shot_decisions
    from sfam_lite.memory import EPISODE_SOLVE_BYTES
    from sfam_lite.models import FRN
    torch.manual_seed(0)
    model = FRN(width=0.25).eval()
    labels = torch.arange(10).repeat_interleave(20)
    features = torch.rand(len(labels), 25, 160) / 5
    by_default = few_shot_decisions(model, features, labels, episodes=30)
    one_at_a_time = few_shot_decisions(model, features, labels, episodes=30, chunk=1)
    assert torch.equal(by_default.chosen_support, one_at_a_time.chosen_support)
    assert torch.equal(by_default.correct, one_at_a_time.correct)
    full_width = episodes_per_solve(640, 25)
    assert 1 <= full_width < 50 and full_width * 5 * 3 * 80 * 25 * 640 * 4 <= EPISODE_SOLVE_BYTES
    assert episodes_per_solve(8, 4) == 50 and episodes_per_solve(10**4, 25) == 1
