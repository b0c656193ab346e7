"""How much do chapter 7's headline differences move when the model is trained with another seed?

Chapter 7 explains one FRN and one GPW, each trained once (seed 0), and its intervals cover the test episodes,
images and classes, not the training run. This script trains the synthetic recipes with each seed (the zoo
caches them, so seed 0 is chapter 4's model), evaluates each with chapter 7's protocol and defaults (FRN: 300
5-way 1-shot episodes with evaluation seed 0; GPW: every correct retrieval; threshold 0.2, min-max, largest
component), and records per seed and method the localisation accuracy, the mean IoU, the threshold-free mass in
the box, and each method minus SFAM on the same samples. Chapter 7 prints the spread from the committed file.

    SFAM_BOOK_CACHE=_build/cache python benchmarks/seeds.py --output benchmarks/results/seeds.json

Each training takes about five minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

METHODS = ("sfam", "ones", "raw-cis", "ram", "ram-support", "cgram", "cgram-score", "gradfam", "decomposition")


def evaluate_seed(kind: str, seed: int, episodes: int) -> dict:
    """Chapter 7's evaluation of the ``kind`` model trained with ``seed``: per-method means and differences."""
    from sfam_lite.evaluate import evaluate_frn, evaluate_gpw
    from sfam_lite.loading import load_for
    start = time.time()
    model, test, val_boxes = load_for(kind, None, device="cpu", overrides={"seed": seed})
    trained = time.time() - start
    if kind == "frn":
        result = evaluate_frn(model, test, val_boxes, episodes=episodes, methods=METHODS, thresholds=(0.2,), seed=0)
        accuracy = result.info["few_shot_accuracy"]
    else:
        result = evaluate_gpw(model, test, val_boxes, methods=METHODS, thresholds=(0.2,), seed=0)
        accuracy = result.info["recall_at_1"]
    hit = {m: (v[0] >= 0.5).astype(float) for m, v in result.query.items() if v is not None}
    iou = {m: v[0] for m, v in result.query.items() if v is not None}
    mass = {m: v for m, v in result.mass.items() if v is not None}
    methods = {m: {"locacc": 100 * hit[m].mean(), "iou": 100 * iou[m].mean(), "mass": 100 * mass[m].mean(),
                   "locacc_minus_sfam": 100 * (hit[m] - hit["sfam"]).mean(),
                   "iou_minus_sfam": 100 * (iou[m] - iou["sfam"]).mean(),
                   "mass_minus_sfam": 100 * (mass[m] - mass["sfam"]).mean()} for m in hit}
    return {"kind": kind, "seed": seed, "model_accuracy": 100 * accuracy, "samples": len(hit["sfam"]),
            "train_or_load_seconds": round(trained, 1), "methods": methods}


def seed_parser(doc: str) -> argparse.ArgumentParser:
    """The options every seed script takes: ``--seeds``, ``--kinds``, ``--output``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["frn", "gpw"], choices=["frn", "gpw"])
    parser.add_argument("--output", required=True, help="JSON file of the results (written when all are done)")
    return parser


def run_seeds(args, evaluate, describe, header: dict) -> list[dict] | None:
    """``evaluate(kind, seed)`` for every kind and seed of ``args``, each run printed with ``describe(run)`` as it
    ends; then ``{**header, seeds, cpu, torch, runs}`` written to ``args.output`` at once (checked writable before
    any work). The runs, or None if the file could not be written (the error is printed)."""
    import torch
    from sfam_lite.cli import check_output, write_output
    check_output(args.output, "--output")
    runs = []
    for kind in args.kinds:
        for seed in args.seeds:
            runs.append(evaluate(kind, seed))
            print(f"{kind} seed {seed}: {describe(runs[-1])}", flush=True)
    data = {**header, "seeds": args.seeds, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "runs": runs}
    text = json.dumps(data, indent=1) + "\n"
    problem = write_output(args.output, lambda f: f.write(text), "--output")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    return runs


def main(argv=None) -> int:
    parser = seed_parser(__doc__)
    parser.add_argument("--episodes", type=int, default=300, help="FRN test episodes (chapter 7's default)")
    args = parser.parse_args(argv)

    def describe(run):
        m = run["methods"]
        return (f"model {run['model_accuracy']:.1f} %, {run['samples']} samples; SFAM LocAcc {m['sfam']['locacc']:.1f} %, "
                f"mass {m['sfam']['mass']:.1f} %; RAM - SFAM {m['ram']['locacc_minus_sfam']:+.1f} LocAcc, "
                f"{m['ram']['mass_minus_sfam']:+.1f} mass")
    runs = run_seeds(args, lambda kind, seed: evaluate_seed(kind, seed, args.episodes), describe,
                     {"what": "chapter 7's protocol on the synthetic recipes trained with each seed "
                              "(benchmarks/seeds.py)", "episodes": args.episodes})
    if runs is None:
        return 1
    for kind in args.kinds:
        rows = [r for r in runs if r["kind"] == kind]
        for key in ("locacc_minus_sfam", "mass_minus_sfam"):
            values = np.array([r["methods"]["ram"][key] for r in rows])
            print(f"{kind}: RAM {key} over seeds {values.round(1).tolist()} (spread {np.ptp(values):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
