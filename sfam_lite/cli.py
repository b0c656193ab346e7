"""The package's command lines that need the model zoo: ``python -m sfam_lite.train`` (:func:`train_main`).

It lives here rather than in :mod:`sfam_lite.train` because it loads models through :mod:`sfam_lite.zoo`,
which imports the training code: keeping the command out of ``train`` keeps the imports one-way
(``cli`` → ``zoo`` → ``train``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def train_main(argv=None) -> int:
    """``python -m sfam_lite.train {frn,gpw}``: train (or load from the cache) a zoo model and write its loss log."""
    parser = argparse.ArgumentParser(prog="python -m sfam_lite.train",
                                     description="Train FRN or GPW (and cache the result, as sfam_lite.zoo.load does).")
    parser.add_argument("model", choices=("frn", "gpw"))
    parser.add_argument("--data", choices=("synthetic", "cub"), default="synthetic",
                        help="training data (default: the synthetic benchmark, generated if missing)")
    parser.add_argument("--config", help="JSON file of config fields to override, e.g. {\"episodes\": 2000}")
    parser.add_argument("--data-root", help="dataset root (default: inside the cache folder)")
    parser.add_argument("--cache", help="cache folder (default: $SFAM_BOOK_CACHE or ~/.cache/sfam-book)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from . import zoo
    name = f"{args.model}-{args.data}"
    if name == "frn-cub":
        parser.error("FRN on CUB is not trained here: use FRN's released checkpoint, zoo.load('frn-cub').")
    overrides = json.loads(open(args.config).read()) if args.config else {}
    model = zoo.load(name, data_root=args.data_root, cache=args.cache, device=args.device, **overrides)
    history = model.meta["history"]
    log = Path(model.meta["checkpoint"]).with_suffix(".log.csv")
    keys = list(history[0])
    log.write_text("\n".join([",".join(keys)] + [",".join(str(h[k]) for k in keys) for h in history]) + "\n")
    print(f"model: {model.meta['checkpoint']}\nlog:   {log}")
    return 0
