"""Seconds per GPW training batch on the CPU for the architectures and precisions the sweep compares.

One batch = 16 classes × 5 images at 80 px, forward + MS loss + backward + Adam step (not the augmentation,
about 0.02 s per batch on the same machine), with 2 torch threads
(the book's CI machine). Ratios are against the previous default (ResNet-18, float32), run in the same
process; the batch counts of ``gpw_sweep.py`` are about five minutes divided by these times.

    python benchmarks/gpw_cpu_speed.py [--threads 2] [--repeats 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfam_lite.models.gpw import GPWEmbedding, multi_similarity_loss  # noqa: E402
from sfam_lite.train import _autocast  # noqa: E402

CASES = [("resnet18", "float32"), ("resnet18", "bfloat16"), ("resnet10", "float32"), ("resnet10", "bfloat16")]


def seconds_per_batch(arch: str, precision: str, repeats: int, size: int = 80) -> float:
    torch.manual_seed(0)
    model = GPWEmbedding(arch, 512, last_stride=1, freeze_bn=False).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, labels = torch.randn(80, 3, size, size), torch.arange(16).repeat_interleave(5)
    times = []
    for _ in range(repeats + 1):   # the first batch warms up the allocator and oneDNN's kernels
        start = time.perf_counter()
        with _autocast(precision, "cpu"):
            embeddings = model(x)
        loss = multi_similarity_loss(embeddings.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} batches of 16x5 at 80 px")
    base = None
    for arch, precision in CASES:
        s = seconds_per_batch(arch, precision, args.repeats)
        base = base or s
        print(f"{arch:9s} {precision:9s} {s:6.3f} s/batch  speed-up x{base / s:4.2f}  "
              f"batches in 5 min: {int(300 / s)}", flush=True)


if __name__ == "__main__":
    main()
