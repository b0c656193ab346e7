"""The package's command lines that need the model zoo: ``python -m sfam_lite.train`` (:func:`train_main`).

It lives here rather than in :mod:`sfam_lite.train` because it loads models through :mod:`sfam_lite.zoo`,
which imports the training code: keeping the command out of ``train`` keeps the imports one-way
(``cli`` → ``zoo`` → ``train``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fail(message: str, code: int) -> int:
    """Print ``error: message`` as one line on stderr and return the exit status ``code``."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def _read_config(path: str) -> dict:
    """The JSON object of config fields in ``path``; ``ValueError`` (one sentence) when it cannot be used."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror or exc}.") from None
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the config file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}); write an object such as {{\"episodes\": 2000}}.") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"the config file {path} holds a JSON {type(overrides).__name__}, not an object of "
                         "config fields such as {\"episodes\": 2000}.")
    return overrides


def train_main(argv=None) -> int:
    """``python -m sfam_lite.train {frn,gpw}``: train (or load from the cache) a zoo model and write its loss log.

    Exit status: 0 on success; 2 for bad arguments (a missing or malformed ``--config`` file, a bad config field, an
    unknown device), 1 when the data cannot be found or read; either with one ``error:`` line on stderr."""
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
    from data_download.errors import DataError

    from ._checks import check_device
    try:   # everything a user typed is checked before any data is read
        overrides = _read_config(args.config) if args.config else {}
        zoo.config_for(name, **overrides)
        check_device(args.device)
    except (TypeError, ValueError) as exc:
        return _fail(exc, 2)
    try:
        model = zoo.load(name, data_root=args.data_root, cache=args.cache, device=args.device, **overrides)
    except (DataError, FileNotFoundError) as exc:
        return _fail(exc, 1)
    history = model.meta["history"]
    log = Path(model.meta["checkpoint"]).with_suffix(".log.csv")
    keys = list(history[0])
    log.write_text("\n".join([",".join(keys)] + [",".join(str(h[k]) for k in keys) for h in history]) + "\n")
    print(f"model: {model.meta['checkpoint']}\nlog:   {log}")
    return 0
