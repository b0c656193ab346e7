"""The package's command lines that need the model zoo: ``python -m sfam_lite.train`` (:func:`train_main`).

It lives here rather than in :mod:`sfam_lite.train` because it loads models through :mod:`sfam_lite.zoo`,
which imports the training code: keeping the command out of ``train`` keeps the imports one-way
(``cli`` → ``zoo`` → ``train``).

It also holds what every command of the package shares (``python -m sfam_lite.evaluate`` uses them too):
:func:`run_command` (one ``error:`` line instead of a traceback, exit 130 on Ctrl-C), :func:`check_output` (an
output path is checked before the work, not after) and :func:`write_output` (an atomic write that keeps the result
in the temporary folder, and says where, when the path fails late).
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
