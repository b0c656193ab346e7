"""sfam_lite.plotting.overlay_image: an explanation over its image as uint8 pixels, each expected pixel worked out by
hand from pixel = round(255 · ((1 - alpha) · image + alpha · colour(heat))), heat = the min-max normalised map."""
import numpy as np
import pytest
import torch

from sfam_lite.plotting import overlay_image


def test_grey_image_and_a_four_level_map():
    """heat = (0, 1/3, 2/3, 1); matplotlib's 256-entry 'gray' table gives entry floor(256·heat) (255 at most), the
    grey level entry/255: 0, 85/255, 170/255, 1. With alpha 0.5 over a 0.5 grey image: 255·0.25 = 63.75, plus
    0.5·(0, 85, 170, 255) = (0, 42.5, 85, 127.5): 63.75, 106.25, 148.75, 191.25 → 64, 106, 149, 191."""
    image = torch.full((3, 2, 2), 0.5)
    out = overlay_image(image, torch.tensor([[0.0, 1.0], [2.0, 3.0]]), colormap="gray")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[64, 106], [149, 191]]
    assert (out == out[..., :1]).all()


def test_uint8_image_channels_last_with_jet_ends():
    """'jet' at 0 is (0, 0, 0.5), at 1 (0.5, 0, 0). uint8 200 is 200/255; alpha 0.25: 0.75·200 = 150 in each channel,
    plus 0.25·255·0.5 = 31.875 in red (heat 1) or blue (heat 0): 181.875 → 182."""
    image = np.full((1, 2, 3), 200, np.uint8)
    out = overlay_image(image, np.array([[5.0, -1.0]]), alpha=0.25)
    assert out.tolist() == [[[182, 150, 150], [150, 150, 182]]]


def test_map_is_resized_bilinearly_to_the_image():
    """A (1, 2) map [0, 1] on a (2, 4) image: half-pixel centres put the 4 columns at -0.25, 0.25, 0.75, 1.25 of the
    map, clamped at its edges: heat 0, 0.25, 0.75, 1; 'gray' entries 0, 64, 192, 255; alpha 1 shows the heat only."""
    out = overlay_image(torch.zeros(3, 2, 4), torch.tensor([[0.0, 1.0]]), alpha=1.0, colormap="gray")
    assert out[..., 1].tolist() == [[0, 64, 192, 255], [0, 64, 192, 255]]


def test_normalised_image_with_mean_and_std():
    """An ImageNet-normalised image comes back as its 0-255 pixels (alpha 0: the image alone), whether given as a
    (C, H, W) tensor or an (H, W, C) array."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.tensor([[[0.2, 0.8]], [[0.4, 0.0]], [[1.0, 0.6]]])           # (3, 1, 2) in [0, 1]
    normalised = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    want = [[[51, 102, 255], [204, 0, 153]]]                                     # round(255·x)
    assert overlay_image(normalised, torch.rand(1, 2), alpha=0, mean=mean, std=std).tolist() == want
    as_array = normalised.permute(1, 2, 0).numpy()
    assert overlay_image(as_array, torch.rand(1, 2), alpha=0, mean=mean, std=std).tolist() == want


def test_constant_map_gives_no_heat():
    """A constant map says nothing about where to look: the image comes back as it is, however large alpha."""
    image = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    assert overlay_image(image, np.full((1, 2), 7.0), alpha=1.0).tolist() == image.tolist()


def test_grayscale_images_become_rgb():
    out = overlay_image(torch.full((1, 2, 2), 1.0), torch.tensor([[0.0, 0.0], [0.0, 1.0]]), alpha=0.5, colormap="gray")
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [128, 128, 128] and out[1, 1].tolist() == [255, 255, 255]
    assert (overlay_image(np.full((2, 2), 255, np.uint8), np.eye(2), alpha=0.0) == 255).all()


@pytest.mark.parametrize("kwargs, error, phrase", [
    ({"map": torch.rand(1, 4, 4)}, ValueError, r"one \(h, w\) map.*query_maps\[0\]"),
    ({"map": torch.tensor([[0.0, float("nan")]])}, ValueError, "non-finite"),
    ({"image": torch.rand(2, 3, 4, 4)}, ValueError, r"one image.*image\[0\]"),
    ({"image": torch.rand(4, 4, 4)}, ValueError, "C = 1 or 3"),
    ({"image": torch.rand(3, 4, 4) * 4 - 2}, ValueError, r"outside \[0, 1\].*mean= and std="),
    ({"image": "photo.png"}, TypeError, "image must be a torch.Tensor or numpy array"),
    ({"mean": (0.5, 0.5, 0.5)}, ValueError, "pass both mean= and std="),
    ({"mean": (0.5, 0.5), "std": (0.2, 0.2)}, ValueError, "one per channel"),
    ({"alpha": 1.5}, ValueError, "alpha must be <= 1"),
    ({"colormap": "rainbowish"}, ValueError, "unknown colormap 'rainbowish'"),
], ids=["batch of maps", "NaN map", "batch of images", "4 channels", "normalised without mean", "a path",
        "mean without std", "2 means for 3 channels", "alpha > 1", "unknown colormap"])
def test_bad_input_names_the_argument_and_the_fix(kwargs, error, phrase):
    args = {"image": torch.rand(3, 4, 4), "map": torch.rand(4, 4)} | kwargs
    with pytest.raises(error, match=phrase):
        overlay_image(**args)
