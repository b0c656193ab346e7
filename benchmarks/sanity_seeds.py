"""How much do chapter 8's headline numbers move when the model is trained with another seed?

Chapter 8 checks one FRN and one GPW, each trained once (seed 0); its intervals cover the pairs, not the training
run. This script takes the synthetic recipes trained with each seed (the zoo caches them; seed 0 is chapter 4's
model, seeds 1 and 2 are those of ``benchmarks/seeds.py``) and repeats, with chapter 8's defaults, its two
headline measurements:

* **the paper's criterion** (chapter 8, "Randomisation by the paper's own criterion"): on 400 correct decisions
  (FRN: 20 five-way one-shot episodes, evaluation seed 0; evenly spaced), each method's localisation accuracy
  (threshold 0.2, largest component, IoU ≥ 0.5) and mass in the box with the trained model and after full
  randomisation (chapter 8's top-down cascade to its step "all", initialisation seed 0), and the model-free
  contrast map's on the same pairs;
* **deletion and insertion** (chapter 8's section of that name): on 16 of those decisions, with 8 steps and the
  blurred baseline, each method's area under the curve minus the random map's.

    SFAM_BOOK_CACHE=_build/cache python benchmarks/sanity_seeds.py --output benchmarks/results/sanity_seeds.json

About a minute per model and seed on 2 CPU cores once the models are cached (each training takes about five).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))          # seeds.py, beside this file

import torch  # noqa: E402

#: chapter 8's methods and defaults (its parameters cell)
METHODS = ("sfam", "ones", "raw-cis", "ram", "ram-support", "cgram", "cgram-score", "gradfam", "decomposition")
EPISODES, LOCALISATION_PAIRS, PAIRS, DELETION_STEPS, SEED = 20, 400, 16, 8, 0


def evenly(n_available: int, n: int) -> torch.Tensor:
    """n indices evenly spaced over range(n_available) (chapter 8's choice of pairs)."""
    n = min(n, n_available)
    return torch.arange(n) * (n_available // n)


def full_randomisation(model, kind: str):
    """The last step ("all") of chapter 8's top-down cascade: every layer re-initialised, layer by layer from the
    output side with the seeds the chapter's cascade gives them."""
    from sfam_lite.sanity import frn_conv_layers, randomized_copies, torchvision_stages
    if kind == "frn":
        layers = {**dict(reversed(frn_conv_layers(model).items())), "all": model.feature_extractor}
    else:
        layers = {"embed": model.embed, **torchvision_stages(model), "all": model}
    replica = None
    for step, copy in randomized_copies(model, layers, mode="cascading", seed=SEED):
        replica = copy
    assert step == "all"
    return replica


def evaluate_seed(kind: str, seed: int) -> dict:
    from sfam_lite.evaluate import query_maps
    from sfam_lite.evaluation import decisions, forward_with_features
    from sfam_lite.loading import load_for
    from sfam_lite.references import reference_priors
    from sfam_lite.sanity import (contrast_maps, cosine_similarity_of, deletion_insertion, frn_similarity,
                                  localisation_scores)
    start = time.time()
    model, test, val_boxes = load_for(kind, None, device="cpu", overrides={"seed": seed})
    out, _ = forward_with_features(model, model.target_layer, test.images)
    q, s, _ = decisions(model, out, test.labels, episodes=EPISODES, seed=SEED).explained()
    priors = reference_priors(val_boxes, tuple(test.images.shape[-2:]))
    index = evenly(len(q), LOCALISATION_PAIRS)
    lq, ls, boxes = q[index], s[index], test.boxes[q[index]]
    trained = query_maps(model, test.images, lq, ls, METHODS, priors, seed=SEED)
    randomised = query_maps(full_randomisation(model, kind), test.images, lq, ls, METHODS, priors, seed=SEED)
    floor = localisation_scores(contrast_maps(test.images[lq]), boxes)
    methods = {}
    for m in trained:
        t, r = localisation_scores(trained[m], boxes), localisation_scores(randomised[m], boxes)
        methods[m] = {"locacc_trained": 100 * t.localised.mean(), "locacc_randomised": 100 * r.localised.mean(),
                      "drop": 100 * (t.localised - r.localised).mean(),
                      "randomised_minus_contrast": 100 * (r.localised - floor.localised).mean(),
                      "mass_trained": 100 * t.mass.mean(), "mass_randomised": 100 * r.mass.mean(),
                      "shown_randomised": 100 * r.shown.mean()}
    # deletion and insertion on chapter 8's 16 pairs
    pairs = evenly(len(q), PAIRS)
    dq, ds = q[pairs], s[pairs]
    maps = query_maps(model, test.images, dq, ds, (*METHODS, "random"), priors, seed=SEED)
    score = frn_similarity(model) if kind == "frn" else cosine_similarity_of(model)
    auc = {m: {mode: deletion_insertion(score, test.images[dq], test.images[ds], mp, steps=DELETION_STEPS, mode=mode,
                                        baseline="blur").auc for mode in ("deletion", "insertion")}
           for m, mp in maps.items()}
    for m in methods:
        for mode in ("deletion", "insertion"):
            methods[m][f"{mode}_minus_random"] = float((auc[m][mode] - auc["random"][mode]).mean())
    return {"kind": kind, "seed": seed, "pairs": len(lq), "deletion_pairs": len(dq),
            "contrast_locacc": 100 * floor.localised.mean(), "seconds": round(time.time() - start, 1),
            "methods": methods}


def main(argv=None) -> int:
    from seeds import run_seeds, seed_parser
    args = seed_parser(__doc__).parse_args(argv)

    def describe(run):
        m = run["methods"]["sfam"]
        return (f"SFAM LocAcc {m['locacc_trained']:.1f} -> {m['locacc_randomised']:.1f} % (contrast map "
                f"{run['contrast_locacc']:.1f} %); deletion {m['deletion_minus_random']:+.3f}, insertion "
                f"{m['insertion_minus_random']:+.3f} vs random ({run['seconds']:.0f} s)")
    runs = run_seeds(args, evaluate_seed, describe,
                     {"what": "chapter 8's headline measurements on the synthetic recipes trained with each seed "
                              "(benchmarks/sanity_seeds.py)",
                      "defaults": {"episodes": EPISODES, "localisation_pairs": LOCALISATION_PAIRS, "pairs": PAIRS,
                                   "deletion_steps": DELETION_STEPS, "seed": SEED, "baseline": "blur"}})
    return 0 if runs is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
