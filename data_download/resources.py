"""What can be downloaded: URLs, checksums and layout of each archive (checked against the sources named beside each)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Where each command puts its data when ``--root`` is not given: these folders below the book's cache folder
#: (:func:`cache_folder`), which is where the chapters and the model zoo look when they are given no folder.
DEFAULT_ROOTS = {"cub200": "data/cub200", "synthetic": "data/synthetic", "frn-weights": "data/frn"}


def cache_folder() -> Path:
    """The book's cache folder: ``$SFAM_BOOK_CACHE`` if set, else ``~/.cache/sfam-book``. It holds the data
    (:data:`DEFAULT_ROOTS`) and the trained models, so on Colab pointing it at Google Drive keeps them all."""
    return Path(os.environ.get("SFAM_BOOK_CACHE", Path.home() / ".cache" / "sfam-book")).expanduser()


def default_root(name: str) -> Path:
    """The folder a command (``"cub200"``, ``"frn-weights"``, ``"synthetic"``) uses when given no ``--root``, and
    a dataset class when given no ``root``: :data:`DEFAULT_ROOTS` below :func:`cache_folder`."""
    return cache_folder() / DEFAULT_ROOTS[name]


def download_command(name: str, root=None) -> str:
    """The command that gets ``name`` (``"cub200"``, ``"frn-weights"``, ``"synthetic"``), into ``root`` when one
    is given (without it, into :func:`default_root`): what every "get it with ..." message names, quoted for a
    shell where the folder's name needs it."""
    import shlex
    return f"python -m data_download {name}" + ("" if root is None else f" --root {shlex.quote(str(root))}")


@dataclass(frozen=True)
class Resource:
    """A downloadable archive and the folder it becomes.

    ``top`` is the folder inside the archive that is moved into place as ``root/folder``; with
    ``top=None`` the whole extracted tree is (or, if the archive holds one top-level folder named
    ``folder``, that folder is). Other top-level entries (CUB's stray ``attributes.txt``) are discarded.
    ``required`` lists files the result must contain.
    """
    name: str
    command: str
    urls: tuple[str, ...]
    filename: str
    folder: str
    top: str | None
    required: tuple[str, ...]
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    confirm_pages: bool = False
    homepage: str = ""
    manual_url: str | None = None
    notes: tuple[str, ...] = field(default=())
    approximate_size: str | None = None    # said before downloading when the exact size is not published

    def manual_fix(self, root) -> str:
        """The paragraph telling a user how to get the archive by hand."""
        where = self.manual_url or (self.urls[0] if self.urls else self.homepage)
        sums = ", ".join(f"{k} {v}" for k, v in (("size", f"{self.size:,} bytes" if self.size else None),
                                                 ("md5", self.md5), ("sha256", self.sha256)) if v)
        extra = "".join(" " + n for n in self.notes)
        return (f"Manual fix: download {self.filename} from {where} (in a browser or on another machine), "
                f"save it as {root}/{self.filename} ({sums}) and run `{download_command(self.command, root)}` again; it verifies and extracts the file without downloading. "
                f"A mirror can be given with --url.{extra}")


CUB200_ARCHIVE = Resource(
    name="CUB-200-2011",
    command="cub200",
    # Caltech's archive, then fast.ai's copy of it on S3 (the copy most projects download): whichever serves,
    # the file must pass the size, md5 and sha256 below, and a transfer that breaks or stalls on the first
    # resumes from the second.
    urls=("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
          "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"),
    filename="CUB_200_2011.tgz",
    folder="CUB_200_2011",
    top="CUB_200_2011",
    required=("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt",
              "bounding_boxes.txt", "images"),
    size=1_150_585_339,
    md5="97eceeb196236b17998738112f37df78",
    sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
    homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
)

#: FRN's released weights live on Google Drive (file id from Tsingularity/FRN,
#: ``trained_model_weights/download_weights.sh``). Drive answers large files with a virus-scan
#: confirmation page, which :func:`data_download.download.fetch` follows. The archive's size and
#: sha256 are not published; only its md5 is.
FRN_DRIVE_ID = "1n6zg5Bkj5FzSHpRbJdzlUkSVDtmjgobm"
FRN_WEIGHTS = Resource(
    name="FRN trained weights",
    command="frn-weights",
    urls=(f"https://drive.usercontent.google.com/download?id={FRN_DRIVE_ID}&export=download&confirm=t",
          f"https://drive.google.com/uc?export=download&id={FRN_DRIVE_ID}"),
    filename="trained_model_weights.tar",
    folder="trained_model_weights",
    top=None,
    required=("CUB_fewshot_raw/FRN/ResNet-12/model.pth",),
    md5="0dde61f0b520ae9c17c9aae6dcc64b55",
    confirm_pages=True,
    homepage="https://github.com/Tsingularity/FRN",
    manual_url=f"https://drive.google.com/file/d/{FRN_DRIVE_ID}/view",
    notes=("In the browser, press 'Download anyway' if Google Drive shows its virus-scan page.",),
    approximate_size="0.8 GB, the weights of every FRN model FRN's authors released",
)
