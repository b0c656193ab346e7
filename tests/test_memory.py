"""The memory budgets decide batch sizes only: the image batch keeps the 96 px batch's pixel count."""
import pytest

from sfam_lite import memory


@pytest.mark.parametrize("size", [(32, 32), (96, 96), (97, 96), (227, 227), (375, 500), (4000, 4000)])
def test_an_image_batch_never_holds_more_pixels_than_the_96_px_batch(size):
    n = memory.images_per_batch(size)
    budget = memory.IMAGES_AT_96_PX * 96 * 96
    assert n >= 1
    assert n <= memory.IMAGES_AT_96_PX
    if n > 1:
        assert n * size[0] * size[1] <= budget                       # no more pixels than the budget...
    if n < memory.IMAGES_AT_96_PX:
        assert (n + 1) * size[0] * size[1] > budget                   # ...and one more image would exceed it


def test_the_batch_at_227_px_is_44_images_and_follows_the_budget(monkeypatch):
    assert memory.images_per_batch((227, 227)) == 250 * 96 * 96 // (227 * 227) == 44
    monkeypatch.setattr(memory, "IMAGES_AT_96_PX", 100)
    assert memory.images_per_batch((96, 96)) == 100
    assert memory.images_per_batch((96, 96), at_96=7) == 7


def test_giving_freed_memory_back_is_safe_to_call_anywhere():
    assert memory.release_freed_memory() is None
