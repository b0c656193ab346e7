"""The book's own rules: every chapter is in the table of contents, has a parameters cell, kernel
metadata, no committed errors, and Colab cells generated from the one repository URL."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import sync_colab  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files():
    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return {toc["root"], *walk(toc)}


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_rules(path):
    nb = json.loads(path.read_text())
    assert f"notebooks/{path.stem}" in toc_files(), "chapter missing from _toc.yml"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["language_info"]["name"] == "python"
    tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
    assert sum("parameters" in t for t in tags) == 1, "exactly one cell must be tagged 'parameters'"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "chapters are committed executed"
    assert not any(o["output_type"] == "error" for c in code for o in c.get("outputs", []))
    assert any("import sfam_lite" in "".join(c["source"]) or "from sfam_lite" in "".join(c["source"]) for c in code)


# A control character in markdown is a backslash lost on the way into the notebook's JSON: "\\rho" written as
# "\rho" is a carriage return followed by "ho", "\\times" a tab followed by "imes", "\\frac" a form feed.
LOST_BACKSLASH = re.compile(r"[\x00-\x09\x0b-\x1f]")


def lost_backslashes(nb) -> list[str]:
    """The places in ``nb``'s markdown cells where a control character stands (with 12 characters around)."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        text = "".join(cell["source"]) if cell["cell_type"] == "markdown" else ""
        found += [f"cell {i}: {text[max(0, m.start() - 12):m.end() + 12]!r}" for m in LOST_BACKSLASH.finditer(text)]
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_markdown_holds_no_lost_backslash(path):
    assert lost_backslashes(json.loads(path.read_text())) == []


def test_lost_backslash_rule_catches_rho_and_times():
    cells = [{"cell_type": "markdown", "source": ["the median $\rho$ and a $5\times5$ map\n"]},
             {"cell_type": "code", "source": ["print('a\\tb')"]},
             {"cell_type": "markdown", "source": ["$\\rho$ and $5\\times5$ are fine\n"]}]
    found = lost_backslashes({"cells": cells})
    assert len(found) == 2 and found[0].startswith("cell 0:") and "ho$" in found[0] and "imes5" in found[1]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_colab_cells_follow_config(path):
    url, branch = sync_colab.repository()
    assert sync_colab.stale_cells(path, url, branch) == [], "run `python scripts/sync_colab.py`"


def test_sync_detects_and_repairs_a_stale_badge(tmp_path):
    url, branch = sync_colab.repository()
    copy = tmp_path / CHAPTERS[0].name
    shutil.copy(CHAPTERS[0], copy)
    assert sync_colab.stale_cells(copy, "https://github.com/someone/else", branch) == ["colab-badge", "colab-setup"]
    assert sync_colab.sync(copy, "https://github.com/someone/else", branch)
    assert sync_colab.stale_cells(copy, "https://github.com/someone/else", branch) == []
    assert "someone/else" in copy.read_text()


def test_book_repository_url_is_only_in_config():
    url, _ = sync_colab.repository()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    holders = {f for f in tracked if f.endswith((".py", ".md", ".yml", ".toml", ".txt", ".sh"))
               and url in (ROOT / f).read_text(errors="ignore")}
    # pyproject.toml's project URLs are static metadata and cannot read _config.yml: they must start with its URL
    assert holders <= {"_config.yml", "pyproject.toml"}, \
        f"the repository URL is repeated in {holders - {'_config.yml', 'pyproject.toml'}}"
    import tomllib
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls and all(u.startswith(url) for u in urls.values()), f"pyproject.toml's URLs {urls} are not below {url}"


def test_front_page_lists_every_page_of_the_toc():
    intro = (ROOT / "book" / "intro.md").read_text()
    section = intro.split("## How to read it", 1)[1].split("\n## ", 1)[0]
    listed = {str((ROOT / "book" / ref).resolve().relative_to(ROOT)) for ref in re.findall(r"\{doc\}`([^`]+)`", section)}
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    missing = toc_files() - {toc["root"]} - listed
    assert not missing, f"book/intro.md's 'How to read it' does not list {sorted(missing)}"


def _markdown_sources():
    """(name, text) of every markdown cell of every chapter and every page under book/."""
    for path in CHAPTERS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.name, path.read_text()


def test_equations_carry_the_papers_numbers_or_none():
    """Sphinx numbers labelled equations 1, 2, 3... per page, which contradicts the paper's numbering (chapter 2
    labelled the paper's Eq. 5 "(6)"). Equations are numbered only with ``\\tag{n}``, n one of the paper's
    Eqs. 1-7, and referred to by name (a ``(label)=`` target and ``{ref}``), never by ``{eq}``."""
    offending = []
    for name, text in _markdown_sources():
        offending += [f"{name}: Sphinx-numbered equation label {m!r}" for m in re.findall(r"^\$\$[ \t]*\(([^)]+)\)", text, re.M)]
        offending += [f"{name}: {{eq}} reference to {m!r}" for m in re.findall(r"\{eq\}`([^`]+)`", text)]
        offending += [f"{name}: numbered environment {m!r}" for m in re.findall(r"\\begin\{(equation|align|gather|multline)\}", text)]
        offending += [f"{name}: \\tag{{{m}}} is not one of the paper's Eqs. 1-7" for m in re.findall(r"\\tag\{([^}]*)\}", text)
                      if m not in {str(i) for i in range(1, 8)}]
    assert not offending, "\n".join(offending)


def test_equation_rule_catches_a_sphinx_label():
    assert re.findall(r"^\$\$[ \t]*\(([^)]+)\)", "$$\nx\n$$ (eq-x)\n", re.M) == ["eq-x"]


def test_front_page_tables_are_glued_by_the_localisation_chapter():
    """book/intro.md pastes Tables 1-2 from chapter 7's committed outputs (myst-nb glue): every key it pastes must be
    glued there, as HTML, from a cell hidden in the chapter."""
    intro = (ROOT / "book" / "intro.md").read_text()
    pasted = re.findall(r"```\{glue:any\} (\S+)\n:doc: \.\./notebooks/07_localisation\.ipynb\n```", intro)
    assert pasted == ["table1_frn", "table2_gpw"], pasted
    glued = {}
    for cell in json.loads((ROOT / "notebooks" / "07_localisation.ipynb").read_text())["cells"]:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                glued[name] = (out["data"], cell["metadata"].get("tags", []))
    for key in pasted:
        assert key in glued, f"notebooks/07_localisation.ipynb glues no {key!r}: re-execute it"
        data, tags = glued[key]
        html = data.get("application/papermill.record/text/html", "")
        assert "synthetic benchmark" in html and "<table" in html, "the table must say it is on the synthetic benchmark"
        assert "remove-cell" in tags


# What a reader sees as text: streams, and the plain text of outputs that have nothing richer to show. The book's
# text column holds about 88 characters of output; a longer line is cut off or scrolls out of sight.
OUTPUT_WIDTH = 88
BOOKKEEPING = re.compile(r"\b(target|budget)\b[^\n]*:\s*(True|False)\b")


def printed_lines(nb) -> list[tuple[int, str]]:
    """``(cell index, line)`` of every line of text output in ``nb`` a reader sees as text."""
    lines = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                text = "".join(out["text"])
            elif set(out.get("data", {})) == {"text/plain"}:
                text = "".join(out["data"]["text/plain"])
            else:
                continue
            lines += [(i, line) for line in text.splitlines()]
    return lines


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_printed_lines_fit_the_text_column(path):
    long = [f"cell {i}, {len(line)} characters: {line[:60]}..." for i, line in printed_lines(json.loads(path.read_text()))
            if len(line) > OUTPUT_WIDTH]
    assert long == [], "print shorter lines, or show the table with sfam_lite.tables.Table"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_bookkeeping_is_printed_to_readers(path):
    """Targets and budgets are checked by tests and benchmarks; a reader is not shown "target ...: False"."""
    found = [f"cell {i}: {line}" for i, line in printed_lines(json.loads(path.read_text())) if BOOKKEEPING.search(line)]
    assert found == []


def test_output_rules_catch_a_long_line_and_a_printed_verdict_on_a_target():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["x" * (OUTPUT_WIDTH + 1) + "\n", "short\n"]},
        {"output_type": "execute_result", "data": {"text/plain": ["trained in 29.0 min (target: at most 6 min: False)"]}},
        {"output_type": "display_data", "data": {"text/plain": ["y" * 200], "text/html": ["<table></table>"]}}]}]}
    lines = printed_lines(nb)
    assert [len(line) for _, line in lines] == [OUTPUT_WIDTH + 1, 5, 50]          # the HTML output is not text
    assert [bool(BOOKKEEPING.search(line)) for _, line in lines] == [False, False, True]


def uncaptioned_figures(nb) -> list[str]:
    """Code cells of ``nb`` that draw a figure (an image output) without a caption or alt text in their myst-nb
    metadata (``mystnb.figure.caption``, ``mystnb.image.alt``): in the book such an image has no ``<figcaption>``
    and its alt text is a hashed file name."""
    missing = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        meta = cell.get("metadata", {}).get("mystnb", {})
        for what, value in (("caption", meta.get("figure", {}).get("caption")), ("alt text", meta.get("image", {}).get("alt"))):
            if not (isinstance(value, str) and len(value.split()) >= 5):
                missing.append(f"cell {i}: no {what}")
    return missing


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_has_a_caption_and_alt_text(path):
    assert uncaptioned_figures(json.loads(path.read_text())) == []


def test_caption_rule_catches_a_bare_figure_and_a_one_word_alt():
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR"}}
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [png]},
             {"cell_type": "code", "metadata": {"mystnb": {"figure": {"caption": "What the panels show, and why."},
                                                           "image": {"alt": "plot"}}}, "outputs": [png]},
             {"cell_type": "code", "metadata": {}, "outputs": [{"output_type": "stream", "text": ["no figure"]}]}]
    assert uncaptioned_figures({"cells": cells}) == ["cell 0: no caption", "cell 0: no alt text", "cell 1: no alt text"]


# The book's text column at a 1366 px screen is 757 px: a figure saved wider (matplotlib's inline figures: 100 dpi,
# so wider than 7.5 in) is shrunk to fit, and the text in it shrinks with it below its size in points.
COLUMN_PX = 770


def figure_widths(nb) -> list[tuple[int, int]]:
    """``(cell index, width in px)`` of every PNG a code cell of ``nb`` shows."""
    import base64
    import struct
    widths = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("image/png")
            if data:
                png = base64.b64decode(data if isinstance(data, str) else "".join(data))
                widths.append((i, struct.unpack(">I", png[16:20])[0]))
    return widths


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_figures_fit_the_text_column_unshrunk(path):
    wide = [f"cell {i}: {w} px" for i, w in figure_widths(json.loads(path.read_text())) if w > COLUMN_PX]
    assert wide == [], "draw the figure at most sfam_lite.plotting.COLUMN_INCHES wide"


def test_figure_width_rule_reads_the_png_header():
    import base64
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (COLUMN_PX + 1, 3)).save(buffer, format="PNG")
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {"image/png": base64.b64encode(buffer.getvalue()).decode()}}]}]}
    assert figure_widths(nb) == [(0, COLUMN_PX + 1)]
