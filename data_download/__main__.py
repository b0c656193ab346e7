"""``python -m data_download {cub200,frn-weights,synthetic} --root DIR``: get the book's data.

Exit status: 0 when the data are ready (also when they already were), 1 with a one-paragraph message
on stderr when something failed or a value is out of range, e.g. a negative seed (nothing that looks complete
is left behind), 2 for arguments that cannot be read at all (an unknown option, a seed that is not a number).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from .errors import DataError
from .install import install
from .resources import CUB200_ARCHIVE, FRN_WEIGHTS, default_root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_download",
        description="Download CUB-200-2011 or FRN's weights, or generate the offline synthetic benchmark "
                    "(CUB's layout). Every command writes into a temporary folder and moves the result into "
                    "place only when it is complete; running it again on a complete folder does nothing.",
        epilog="Examples: python -m data_download synthetic --root data/synthetic | "
               "python -m data_download cub200 --root data/cub200 --url https://mirror.example/CUB_200_2011.tgz")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{cub200,frn-weights,synthetic}")

    def downloader(name: str, resource, help_text: str) -> None:
        root = default_root(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--root", default=str(root),
                       help=f"folder that receives {resource.folder}/ (default: {root}, in the book's cache "
                            "folder $SFAM_BOOK_CACHE, where the chapters look)")
        p.add_argument("--url", action="append", metavar="URL",
                       help=f"download from this mirror instead (repeatable; default: {resource.urls[0]})")
        p.add_argument("--keep-archive", action="store_true",
                       help=f"keep {resource.filename} in --root after extracting it")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    downloader("cub200", CUB200_ARCHIVE,
               "CUB-200-2011 (1.1 GB; size, md5 and sha256 verified; resumes an interrupted download).")
    downloader("frn-weights", FRN_WEIGHTS,
               "FRN's released trained weights (Google Drive; md5 verified).")
    p = sub.add_parser("synthetic", help="Generate the synthetic benchmark offline (CUB's exact layout).",
                       description="Generate the synthetic benchmark: 200 classes of procedurally drawn birds on "
                                   "natural clutter, in CUB's folder and file layout, as JPEG; deterministic for a seed.")
    p.add_argument("--root", default=str(default_root("synthetic")),
                   help=f"folder that receives CUB_200_2011/ (default: {default_root('synthetic')}, in the book's "
                        "cache folder $SFAM_BOOK_CACHE, where the chapters look)")
    p.add_argument("--images-per-class", type=int, default=40, metavar="N", help="images per class (default: 40)")
    p.add_argument("--size", type=int, default=96, metavar="S", help="image side in pixels (default: 96)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default: 0)")
    p.add_argument("--classes", type=int, default=200, metavar="C", help="number of classes (default: 200)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker processes (default: the number of CPUs, at most 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    start = time.perf_counter()
    try:
        if args.command == "synthetic":
            from .synthetic import generate

            folder, did = generate(args.root, args.images_per_class, args.size, args.seed, args.classes,
                                   args.workers, progress=not args.quiet)
        else:
            resource = CUB200_ARCHIVE if args.command == "cub200" else FRN_WEIGHTS
            folder, did = install(resource, args.root, args.url, keep_archive=args.keep_archive,
                                  progress=not args.quiet, log=log)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = ("nothing partial was kept" if args.command == "synthetic" else "a partial download resumes")
        print(f"error: interrupted. Run the same command again; {again}.", file=sys.stderr)
        return 130
    if did:
        print(f"Done: {folder} is complete ({time.perf_counter() - start:.1f} s).")
    else:
        print(f"{folder} is already complete; nothing to do.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
