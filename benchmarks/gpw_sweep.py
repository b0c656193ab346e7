"""Which GPW CPU configuration reaches Recall@1 ≥ 60 % within a CPU budget? A sweep run on a GPU.

Each variant (``BASE`` plus a few overrides) trains the GPW embedding (``sfam_lite.train.train_gpw``) on the
synthetic benchmark's classes
1–100 for the number of batches given, then measures Recall@1/2/4/8 on classes 101–200. The GPU only makes
the sweep fast; the batch counts are what 2 CPU cores manage in about five minutes (measured separately with
``benchmarks/gpw_cpu_speed.py``), so the chosen variant is then re-trained and timed on the CPU.

    python benchmarks/gpw_sweep.py --round 2 --device cuda --parallel 8 --out results.jsonl
    python benchmarks/gpw_sweep.py --summarize benchmarks/results/gpw_sweep_round*.jsonl   # a Markdown table

Rounds 1 and 2 scored every variant on classes 101–200, the classes chapter 4 then reports as unseen, so the
choice they made is optimistic for those classes. ``--holdout K`` scores on a validation split of the
*training* classes instead: it trains on classes 1..100-K and measures Recall@K on the K held-out classes
100-K+1..100 (their images from the training half), so classes 101–200 play no part in the choice. Round
``"validation"`` is the chosen configuration and its closest rivals from round 2 at the CPU's batch budget;
``--root`` pointed at a benchmark generated with another seed (``python -m data_download synthetic --seed 1``)
confirms a choice on classes that played no part in it:

    python benchmarks/gpw_sweep.py --round validation --holdout 20 --device cpu --threads 1 --parallel 1 \
        --out benchmarks/results/gpw_validation.jsonl
    python benchmarks/gpw_sweep.py --round validation --only chosen --root <seed-1 benchmark> --device cpu \
        --threads 1 --parallel 1 --out benchmarks/results/gpw_confirm_seed1.jsonl
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Every variant is this base (GPWConfig as it was before the sweep) plus its overrides, so that later changes
# of GPWConfig's defaults do not change what a variant means. Each result records its full configuration.
BASE = {"arch": "resnet18", "last_stride": 1, "freeze_bn": False, "dim": 512, "image_size": 80,
        "classes_per_batch": 16, "instances": 5, "batches": 300, "lr": 1e-3, "weight_decay": 5e-4,
        "crop_scale": (0.25, 1.0), "jitter": 0.0, "schedule": "constant", "warmup": 0, "precision": "float32",
        "alpha": 2.0, "beta": 40.0, "lam": 0.5, "margin": 0.1, "weights": None, "seed": 0}
COSINE = {"schedule": "cosine", "warmup": 50}
CROP = {"crop_scale": (0.5, 1.0)}
ROUNDS = {
    # round 1: architecture, steps, schedule, optimiser, augmentation, batch shape (one seed unless named)
    1: {
        "r18-300-const (current)": {"arch": "resnet18", "batches": 300},
        "r18-540-const": {"arch": "resnet18", "batches": 540},
        "r18-540-cos": {"arch": "resnet18", "batches": 540, **COSINE},
        "r18-1000-cos": {"arch": "resnet18", "batches": 1000, **COSINE},
        "r10-550-const": {"arch": "resnet10", "batches": 550},
        "r10-550-cos": {"arch": "resnet10", "batches": 550, **COSINE},
        "r10-1000-const": {"arch": "resnet10", "batches": 1000},
        "r10-1000-cos": {"arch": "resnet10", "batches": 1000, **COSINE},
        "r10-1000-cos-seed1": {"arch": "resnet10", "batches": 1000, **COSINE, "seed": 1},
        "r10-1000-cos-seed2": {"arch": "resnet10", "batches": 1000, **COSINE, "seed": 2},
        "r10-1000-cos-bf16": {"arch": "resnet10", "batches": 1000, **COSINE, "precision": "bfloat16"},
        "r10-1000-cos-lr2e-3": {"arch": "resnet10", "batches": 1000, **COSINE, "lr": 2e-3},
        "r10-1000-cos-lr5e-4": {"arch": "resnet10", "batches": 1000, **COSINE, "lr": 5e-4},
        "r10-1000-cos-wd0": {"arch": "resnet10", "batches": 1000, **COSINE, "weight_decay": 0.0},
        "r10-1000-cos-crop.08": {"arch": "resnet10", "batches": 1000, **COSINE, "crop_scale": (0.08, 1.0)},
        "r10-1000-cos-crop.5": {"arch": "resnet10", "batches": 1000, **COSINE, **CROP},
        "r10-1000-cos-20x4": {"arch": "resnet10", "batches": 1000, **COSINE, "classes_per_batch": 20, "instances": 4},
        "r10-1000-cos-10x8": {"arch": "resnet10", "batches": 1000, **COSINE, "classes_per_batch": 10, "instances": 8},
        "r10-1500-cos": {"arch": "resnet10", "batches": 1500, **COSINE},
        "r10-96px-1000-cos": {"arch": "resnet10", "batches": 1000, **COSINE, "image_size": 96},
        "r10-2000-cos": {"arch": "resnet10", "batches": 2000, **COSINE},
        "r18-2000-cos": {"arch": "resnet18", "batches": 2000, **COSINE},
    },
    # round 2: the winners of round 1 combined, over seeds, at the batch counts 2 CPU cores allow
    2: {
        **{f"r10-550-cos-crop.5-seed{s}": {"arch": "resnet10", "batches": 550, **COSINE, **CROP, "seed": s}
           for s in range(3)},
        **{f"r10-1000-cos-crop.5-seed{s}": {"arch": "resnet10", "batches": 1000, **COSINE, **CROP, "seed": s}
           for s in range(3)},
        **{f"r10-1000-cos-crop.5-bf16-seed{s}": {"arch": "resnet10", "batches": 1000, **COSINE, **CROP,
                                                 "precision": "bfloat16", "seed": s} for s in range(2)},
        "r10-550-cos-crop.5-lr2e-3": {"arch": "resnet10", "batches": 550, **COSINE, **CROP, "lr": 2e-3},
        "r10-1000-cos-crop.5-lr2e-3": {"arch": "resnet10", "batches": 1000, **COSINE, **CROP, "lr": 2e-3},
        "r10-550-cos-crop.7": {"arch": "resnet10", "batches": 550, **COSINE, "crop_scale": (0.7, 1.0)},
        "r10-1000-cos-crop.7": {"arch": "resnet10", "batches": 1000, **COSINE, "crop_scale": (0.7, 1.0)},
        "r10-550-cos-crop.5-10x8": {"arch": "resnet10", "batches": 550, **COSINE, **CROP, "classes_per_batch": 10,
                                    "instances": 8},
        "r10-96px-400-cos-crop.5": {"arch": "resnet10", "batches": 400, **COSINE, **CROP, "image_size": 96},
        "r10-96px-700-cos-crop.5": {"arch": "resnet10", "batches": 700, **COSINE, **CROP, "image_size": 96},
        "r18-300-cos-crop.5": {"arch": "resnet18", "batches": 300, **COSINE, **CROP},
        "r18-540-cos-crop.5": {"arch": "resnet18", "batches": 540, **COSINE, **CROP},
    },
    # validation: the chosen configuration (sfam_lite.train.GPWConfig's defaults) and its closest rivals of round 2
    # that fit the CPU's budget (550 batches at 80 px, or 400 at 96 px), re-scored on held-out training classes
    "validation": {
        "chosen": {"arch": "resnet10", "batches": 550, **COSINE, **CROP},
        "r10-550-cos-crop.7": {"arch": "resnet10", "batches": 550, **COSINE, "crop_scale": (0.7, 1.0)},
        "r10-96px-400-cos-crop.5": {"arch": "resnet10", "batches": 400, **COSINE, **CROP, "image_size": 96},
        "r10-550-cos-crop.5-lr2e-3": {"arch": "resnet10", "batches": 550, **COSINE, **CROP, "lr": 2e-3},
    },
}


def holdout_split(labels, holdout: int):
    """Boolean masks ``(train, validation)`` over ``labels`` (0-based class indices of the training classes):
    the last ``holdout`` classes are held out for validation, the others trained on; ``holdout=0`` trains on all."""
    classes = sorted(set(labels.tolist()))
    if not 0 <= holdout < len(classes) - 1:
        raise ValueError(f"holdout must be between 0 and {len(classes) - 2} classes (the MS loss needs at least two "
                         f"training classes), got {holdout}.")
    held = labels >= classes[len(classes) - holdout] if holdout else labels < labels.min()
    return ~held, held


def run(job):
    name, overrides, root, device, threads, holdout = job
    import torch
    torch.set_num_threads(threads)
    from data_download import SyntheticCUB200, load_tensors
    from sfam_lite.evaluation import eval_set
    from sfam_lite.metrics import mean_and_interval, nearest_others, recall_at_k
    from sfam_lite.train import GPWConfig, train_gpw
    images, labels = load_tensors(SyntheticCUB200(root, split="retrieval_train"), progress=False)[:2]
    train, held = holdout_split(labels, holdout)
    config = GPWConfig(**{**BASE, **overrides})
    start = time.perf_counter()
    model, history = train_gpw(images[train], labels[train], config, progress=False, device=device)
    seconds = time.perf_counter() - start
    if holdout:   # the held-out training classes, through the evaluation transform
        test = eval_set(SyntheticCUB200(root, split="retrieval_train"), config.image_size)
        test.images, test.labels = test.images[held], test.labels[held]
    else:
        test = eval_set(SyntheticCUB200(root, split="retrieval_test"), config.image_size)
    with torch.no_grad():
        emb = torch.cat([model(test.images[i:i + 500].to(device)) for i in range(0, len(test.images), 500)]).cpu()
    recall = recall_at_k(emb, test.labels)
    hit1 = (test.labels[nearest_others(emb, 1)[:, 0]] == test.labels).double()
    tail = sum(h["loss"] for h in history[-50:]) / len(history[-50:])
    scored = sorted(set(test.labels.tolist()))
    return {"variant": name, "overrides": overrides, "config": asdict(config), "recall": recall,
            "recall1_interval": mean_and_interval(hit1)[1], "final_loss": tail,
            "trained_classes": f"{int(labels[train].min()) + 1}-{int(labels[train].max()) + 1}",
            "scored_classes": f"{scored[0] + 1}-{scored[-1] + 1}", "queries": len(hit1),
            "benchmark_seed": _benchmark_seed(root), "train_seconds": round(seconds, 1), "device": device,
            "threads": threads}


def _benchmark_seed(root) -> int | None:
    from data_download.synthetic import read_params
    try:
        return read_params(root).seed
    except Exception:   # noqa: BLE001 (a CUB folder or an older benchmark without its parameters)
        return None


def summarize(files: list[str]) -> None:
    """Print the results of ``files`` as one Markdown table, best Recall@1 first."""
    rows = [json.loads(line) for f in files for line in Path(f).read_text().splitlines() if line.strip()]
    print("| variant | R@1 | R@2 | R@4 | R@8 | final loss |\n|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["recall"]["1"]):
        rec = r["recall"]
        print(f"| {r['variant']} | {100 * rec['1']:.1f} | {100 * rec['2']:.1f} | {100 * rec['4']:.1f} | "
              f"{100 * rec['8']:.1f} | {r['final_loss']:.3f} |")


def collect(validation: str, confirmation: str, out: str) -> None:
    """One JSON file (chapter 4 reads it) with the validation runs, ranked, and the confirmation run of the
    configuration the book trains ("chosen"), plus the same as text beside it (``.txt``)."""
    runs = [json.loads(line) for line in Path(validation).read_text().splitlines() if line.strip()]
    confirm = [json.loads(line) for line in Path(confirmation).read_text().splitlines() if line.strip()]
    if not runs or len(confirm) != 1:
        raise SystemExit(f"need at least one validation run and exactly one confirmation run, got {len(runs)} "
                         f"and {len(confirm)}.")
    runs.sort(key=lambda r: -r["recall"]["1"])
    result = {"book_variant": "chosen", "selected_on_validation": runs[0]["variant"], "validation": runs,
              "confirmation": confirm[0]}
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Validation: trained on classes {runs[0]['trained_classes']}, Recall@1 on classes "
             f"{runs[0]['scored_classes']} (seed-{runs[0]['benchmark_seed']} benchmark), best first:"]
    lines += [f"  {r['variant']:<26} R@1 {100 * r['recall']['1']:.1f} ± {100 * r['recall1_interval']:.1f} %  "
              f"({r['queries']} queries, {r['train_seconds']:.0f} s, {r['threads']} thread(s), {r['device']})" for r in runs]
    c = confirm[0]
    lines.append(f"Confirmation: {c['variant']} trained on classes {c['trained_classes']} of the seed-{c['benchmark_seed']} "
                 f"benchmark, R@1 on classes {c['scored_classes']}: {100 * c['recall']['1']:.1f} ± "
                 f"{100 * c['recall1_interval']:.1f} % ({c['queries']} queries, {c['train_seconds']:.0f} s)")
    Path(out).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--round", type=lambda r: int(r) if r.isdigit() else r, default=2,
                        help="1, 2 or validation")
    parser.add_argument("--holdout", type=int, default=0, metavar="K",
                        help="score on the last K training classes (trained on the others), not on classes 101-200")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--only", nargs="*", help="variant names (default: all of the round)")
    parser.add_argument("--out", default="benchmarks/results/gpw_sweep.jsonl")
    parser.add_argument("--summarize", nargs="+", metavar="JSONL", help="print earlier results as a table and stop")
    parser.add_argument("--collect", nargs=2, metavar=("VALIDATION_JSONL", "CONFIRMATION_JSONL"),
                        help="write the validation round's and the confirmation's results as one JSON file (--out) "
                             "and a text summary beside it, and stop")
    args = parser.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    if args.collect:
        return collect(*args.collect, args.out)
    variants = ROUNDS[args.round]
    names = args.only or list(variants)
    jobs = [(n, variants[n], args.root, args.device, args.threads, args.holdout) for n in names]
    jobs.sort(key=lambda job: -job[1]["batches"])   # longest first, for an even spread over the workers
    with mp.get_context("spawn").Pool(args.parallel) as pool, open(args.out, "w") as out:
        for result in pool.imap_unordered(run, jobs):
            line = json.dumps(result)
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()


if __name__ == "__main__":
    main()
