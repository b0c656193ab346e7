"""How much memory each batched step may take, in one place, and giving freed memory back.

The budgets are sized so that every chapter's CUB branch runs under 8 GiB of RAM on a Colab CPU runtime
(the measurements are in ``benchmarks/README.md``). They decide how many items run at once, never a result:
lower them on a smaller machine and every number printed stays the same.
"""
from __future__ import annotations

#: Images :func:`sfam_lite.evaluation.forward_with_features` runs at once at 96 × 96 px; larger images run in
#: batches of the same number of pixels (:func:`images_per_batch`; 227 px: 44 images, a ResNet-50's activations
#: for 250 images at 227 px took 2.7 GB).
IMAGES_AT_96_PX = 250

#: Composite–support combinations :func:`sfam_lite.similarity.half_change_drops` scores at once at 96 × 96 px,
#: each in three variants (larger images: the same number of pixels). FRN's ResNet-12 keeps the full 84 px through
#: its first block: on chapter 10's 60 pairs, 128 combinations (384 images) a batch took 3.1 GiB, 32 take 1.0 GiB
#: (``benchmarks/memory_parts.py``).
SCORED_COMBINATIONS_AT_96_PX = 32

#: Memory one batched episode solve may take (:func:`sfam_lite.evaluation.few_shot_decisions`): FRN's full-width
#: ResNet-12 (d = 640) needs about 64 MB per 5-way episode with 16 queries per class, so 50 episodes solved
#: together held 3.2 GB.
EPISODE_SOLVE_BYTES = 2**29

#: Memory the query and support features gathered for one chunk of pairs may take in the localisation protocol
#: (:func:`sfam_lite.evaluate.localisation_ious`; gpw-cub's ResNet-50 at 227 px: 0.5 MB a feature map, so about
#: 490 pairs a chunk; the book's small models: the cap of 4,096 pairs).
GATHER_BYTES = 2**29

#: Pairs CG-RAM of FRN's own score explains per call: the score solves its ridge regression per pair with
#: gradients, about 13 MB a pair at FRN's full width, so 512 pairs a call took 6.6 GB.
SCORE_CGRAM_PAIRS = 32


def images_per_batch(size: tuple[int, int], at_96: int | None = None) -> int:
    """How many images of ``size`` run at once: ``at_96`` (default :data:`IMAGES_AT_96_PX`) of 96 × 96 px or
    smaller, and the same number of pixels for larger ones (227 px: 44 images)."""
    at_96 = IMAGES_AT_96_PX if at_96 is None else at_96
    return max(1, min(at_96, at_96 * 96 * 96 // (size[0] * size[1])))


def release_freed_memory() -> None:
    """Give memory that was freed back to the operating system (glibc's ``malloc_trim``; nothing elsewhere), so that
    large tensors allocated and freed in a loop do not stay in the allocator's arenas."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):      # not glibc (macOS, Windows): nothing to do
        pass
