"""``python -m sfam_lite``: the package's commands, one line each (each has its own ``--help``)."""
from __future__ import annotations

import argparse
import sys

#: (command, what it does): the package's and the data's command lines
COMMANDS = (
    ("python -m sfam_lite evaluate", "the paper's Tables 1-2 (localisation) for every method, on FRN or GPW"),
    ("python -m sfam_lite train", "train the book's FRN or GPW model (cached under $SFAM_BOOK_CACHE/models)"),
    ("python -m data_download synthetic", "generate the offline synthetic benchmark (CUB-200-2011's layout)"),
    ("python -m data_download cub200", "download and verify CUB-200-2011 (1.1 GB)"),
    ("python -m data_download frn-weights", "download FRN's released trained weights"),
)


def _parser() -> argparse.ArgumentParser:
    width = max(len(command) for command, _ in COMMANDS)
    listing = "\n".join(f"  {command:<{width}}  {text}" for command, text in COMMANDS)
    return argparse.ArgumentParser(
        prog="python -m sfam_lite", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="sfam_lite: SFAM explanations for metric-learning models (in Python: import sfam_lite).\n\n"
                    "commands:\n" + listing,
        epilog="Run a command with --help for its options.")


def main(argv: list[str] | None = None) -> int:
    """``train`` or ``evaluate`` and their arguments run that command (:mod:`sfam_lite.cli`); nothing or ``--help``
    prints the list of commands; exit status 2 for anything else."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("train", "evaluate"):
        from . import cli
        return (cli.train_main if argv[0] == "train" else cli.evaluate_main)(argv[1:])
    parser = _parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
