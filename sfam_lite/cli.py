"""The package's command lines: ``python -m sfam_lite train`` (:func:`train_main`) and ``python -m sfam_lite
evaluate`` (:func:`evaluate_main`), with what they share: :func:`run_command` (one ``error:`` line instead of a
traceback, exit 130 on Ctrl-C), :func:`check_output` (an output path is checked before the work, not after),
:func:`write_output` (an atomic write that keeps the result in the temporary folder, and says where, when the path
fails late) and one config reader. ``python -m sfam_lite.train`` and ``python -m sfam_lite.evaluate`` are the same
commands under their module names.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path


#: Exit status of a command stopped with Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def _fail(message: str, code: int) -> int:
    """Print ``error: message`` as one line on stderr and return the exit status ``code``."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def run_command(main, argv=None) -> int:
    """Run a command's ``main(argv)`` so that it always ends in one ``error:`` line rather than a traceback: Ctrl-C
    exits with :data:`INTERRUPTED` (130); an unexpected exception exits 1 naming its type (set ``SFAM_DEBUG=1`` to
    see the traceback). ``argparse``'s own exits (2 for bad arguments, 0 for ``--help``) pass through."""
    import os
    try:
        return main(argv)
    except KeyboardInterrupt:
        return _fail("interrupted (Ctrl-C); nothing more was written. Run the command again to redo the work.",
                     INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("SFAM_DEBUG"):
            raise
        return _fail(f"{type(exc).__name__}: {exc} (unexpected; run with SFAM_DEBUG=1 for the traceback).", 1)


@contextmanager
def one_line_warnings(skip: str = "the trained model was kept at"):
    """Inside the block, each warning is printed as one ``warning:`` line on stderr (not Python's two-line form with
    the source line); those containing ``skip`` are dropped (a command reports them as its ``error:`` line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if skip not in str(w.message):
                    print("warning: " + " ".join(str(w.message).split()), file=sys.stderr)


def check_output(path, what: str) -> Path:
    """``path`` (a file the command will write after its work) if it can be written now; ``ValueError`` (one
    sentence naming ``what``, the path and the fix) if not: a directory, a path under a file, a read-only folder."""
    from ._io import check_writable
    return check_writable(path, what)


def write_output(path, write, what: str, binary: bool = False) -> str | None:
    """Write ``path`` atomically with ``write(file)``. On failure (a full disk, a folder removed meanwhile) the result
    is kept in a new file in the temporary folder; returns the one-sentence error naming both paths, or None."""
    from ._io import atomic_write, keep_elsewhere
    try:
        atomic_write(path, write, binary=binary)
        return None
    except OSError as exc:
        try:
            kept = keep_elsewhere(write, Path(path).name, binary=binary)
        except OSError as again:
            return f"cannot write {what} {path} ({exc.strerror or exc}), nor a copy in the temporary folder " \
                   f"({again.strerror or again}); the result is lost. Free space on the disk and run again."
        return (f"cannot write {what} {path} ({exc.strerror or exc}); the result was kept at {kept}. Move it "
                "where you want it.")


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
    unknown device, a cache folder that cannot be written), 1 when the data cannot be found or read or the trained
    model could not be written to the cache (it is then kept in the temporary folder, and the message says where),
    130 on Ctrl-C; each with one ``error:`` line on stderr."""
    return run_command(_train_main, argv)


def _train_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfam_lite train",
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
        cache = Path(args.cache).expanduser() if args.cache else zoo.cache_dir()
        check_output(cache / "models" / f"{name}.pt", "the cache folder's checkpoint")   # before any training
    except (TypeError, ValueError) as exc:
        return _fail(exc, 2)
    try:
        with one_line_warnings():
            model = zoo.load(name, data_root=args.data_root, cache=args.cache, device=args.device, **overrides)
    except (DataError, FileNotFoundError, zoo.CheckpointError) as exc:
        return _fail(exc, 1)
    history = model.meta["history"]
    log = Path(model.meta["checkpoint"]).with_suffix(".log.csv")
    keys = list(history[0])
    text = "\n".join([",".join(keys)] + [",".join(str(h[k]) for k in keys) for h in history]) + "\n"
    problem = write_output(log, lambda f: f.write(text), "the loss log")
    if model.meta.get("cache_error") or problem:
        return _fail(model.meta.get("cache_error") or problem, 1)
    print(f"model: {model.meta['checkpoint']}\nlog:   {log}")
    return 0


def evaluate_main(argv=None) -> int:
    """``python -m sfam_lite evaluate {frn,gpw}``: the localisation tables of every method. Exit status: 0 on
    success; 2 for bad arguments (including an ``--output`` that cannot be written, checked before any work) or data
    and models that cannot be loaded; 1 when no sample could be explained, or when ``--output`` failed late (the
    results are then kept in the temporary folder and the message says where); 130 on Ctrl-C. Each failure ends
    with one ``error:`` line on stderr."""
    return run_command(_evaluate_main, argv)


def results_json(data: dict) -> str:
    """``data`` as strict JSON text: NaN (e.g. the interval of a single unit) and infinities become ``null``, which
    every JSON reader accepts (bare ``NaN``, Python's default, is rejected by ``JSON.parse`` and strict parsers)."""
    from ._io import json_safe
    return json.dumps(json_safe(data), indent=1, allow_nan=False)


def _evaluate_main(argv=None) -> int:
    from . import evaluate, zoo
    from .loading import resolve_device
    from .methods import METHODS
    parser = argparse.ArgumentParser(prog="python -m sfam_lite evaluate",
                                     description="Localisation of every explanation method (the paper's Tables 1-2).")
    parser.add_argument("kind", choices=("frn", "gpw"), help="few-shot FRN (Table 1) or retrieval GPW (Table 2)")
    parser.add_argument("--model", help="zoo name (default: frn-synthetic / gpw-synthetic; frn-cub, gpw-cub)")
    parser.add_argument("--config", help="JSON file of model config fields, as for python -m sfam_lite.train")
    parser.add_argument("--data-root", help="dataset folder (default: inside the cache folder)")
    parser.add_argument("--weights-root", help="folder of FRN's released weights (for --model frn-cub)")
    parser.add_argument("--cache", help="cache folder (default: $SFAM_BOOK_CACHE or ~/.cache/sfam-book)")
    parser.add_argument("--episodes", type=int, default=1000, help="few-shot test episodes (the paper: 10000)")
    parser.add_argument("--way", type=int, default=5, help="classes per few-shot episode (1 shot each)")
    parser.add_argument("--query", type=int, default=16, help="queries per class and episode")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2], help="map thresholds (the paper: 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    parser.add_argument("--output", help="write the tables as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be at least 1, got {args.episodes}.")
        if args.way < 2 or args.query < 1:
            raise ValueError(f"--way must be at least 2 and --query at least 1, got {args.way} and {args.query}.")
        if args.seed < 0:
            raise ValueError(f"--seed must be non-negative, got {args.seed}.")
        bad = [t for t in args.thresholds if not 0 <= t <= 1]
        if bad:
            raise ValueError(f"--thresholds must lie in [0, 1], got {bad}.")
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}.")
        args.device = str(resolve_device(args.device))
        overrides = _read_config(args.config) if args.config else {}
        model_name = args.model or f"{args.kind}-synthetic"
        if model_name in zoo.RECIPES:   # every config field's type and range, before any data is read
            zoo.config_for(model_name, **overrides)
        if args.output:
            check_output(args.output, "--output")
        with one_line_warnings():
            result = evaluate.run(args.kind, args.model, args.data_root, args.episodes, methods, tuple(args.thresholds),
                         args.seed, args.device, not args.no_progress, args.cache, overrides, args.way, args.query,
                         args.weights_root)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError) as exc:
        return _fail(exc, 2)
    info = result.info
    if not info.get("explained_samples"):
        what = (f"the model classified none of the queries of {info.get('episodes')} episode(s) correctly"
                if result.kind == "frn" else "no test image's nearest neighbour is of its class")
        return _fail(f"no sample was explained: {what}, and only correct samples are explained, so there is nothing "
                     "to score (no --output written). Check the model (is it trained?) and the data, or run more "
                     "--episodes.", 1)
    head = f"{info['model']}: {info['explained_samples']} explained samples ({info['distinct_pairs']} distinct pairs)"
    if result.kind == "frn":
        head += f" from {info['episodes']} episodes, {info['way']}-way 1-shot accuracy {100 * info['few_shot_accuracy']:.1f} %"
    else:
        head += f", Recall@1 {100 * info['recall_at_1']:.1f} %"
    print(head)
    for t in result.thresholds:
        for which in ("query", "support"):
            print()
            print(evaluate.format_table(result, t, which))
    if args.output:
        text = results_json(result.to_json())
        problem = write_output(Path(args.output), lambda f: f.write(text), "--output")
        if problem:
            return _fail(problem, 1)
        print(f"\nwritten: {args.output}")
    return 0
