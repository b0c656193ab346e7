"""Table: the HTML a page shows and the text a terminal prints hold the same cells."""
import re

import pytest

from sfam_lite.tables import Table


def test_html_has_one_escaped_cell_per_column_and_the_caption():
    t = Table(["method", "IoU <%>"], [["SFAM", "52.3 ± 1.0"], ["A&B", ("✗ fail", "+0.33 vs random")]], caption="T & 1")
    page = t._repr_html_()
    assert page.startswith("<table class='sfam-headline'><caption>T &amp; 1</caption>")
    assert re.findall(r"<th>(.*?)</th>", page) == ["method", "IoU &lt;%&gt;"]
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
    assert [re.findall(r"<td>(.*?)</td>", r) for r in rows] == [
        ["SFAM", "52.3 ± 1.0"], ["A&amp;B", "✗ fail<br><small>+0.33 vs random</small>"]]


def test_text_aligns_the_label_left_and_the_numbers_right():
    t = Table(["setting", "pairs"], [["Gaussian", "500"], ["ResNet-18, random pairs", "64"]], caption="c")
    lines = str(t).split("\n")
    assert lines[0] == "c"
    assert lines[1] == "setting" + " " * (len("ResNet-18, random pairs") - len("setting")) + "  pairs"
    assert lines[2].startswith("Gaussian ") and lines[2].endswith("  500")
    assert lines[3] == "ResNet-18, random pairs     64"
    assert len({len(line) for line in lines[1:]}) == 1


def test_a_ragged_row_or_an_unformatted_number_is_refused():
    with pytest.raises(ValueError, match="row 1 has 1 cells but the header names 2"):
        Table(["a", "b"], [["x", "y"], ["z"]])
    with pytest.raises(TypeError, match="format numbers"):
        Table(["a", "b"], [["x", 0.5]])


def test_groups_label_runs_of_columns_in_html_and_in_text():
    t = Table(["method", "IoU", "LocAcc", "IoU", "LocAcc"], [["SFAM", "52.3", "61.0", "55.65", "69.08"]],
              groups=[("", 1), ("this book, the synthetic benchmark", 2), ("the paper", 2)])
    page = t._repr_html_()
    head = page.split("<thead>")[1].split("</thead>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", head)
    assert re.findall(r"<th colspan='(\d+)'>(.*?)</th>", rows[0]) == [
        ("1", ""), ("2", "this book, the synthetic benchmark"), ("2", "the paper")]
    assert re.findall(r"<th>(.*?)</th>", rows[1]) == ["method", "IoU", "LocAcc", "IoU", "LocAcc"]
    top, header, row = str(t).split("\n")
    # each group's label starts where its first column starts (two spaces after the column before it ends), and
    # the columns under a label wider than them still end together
    assert top.index("this book") == len("method") + 2
    assert top.index("the paper") == row.index("61.0") + len("61.0") + 2
    assert header.index("LocAcc") + len("LocAcc") == row.index("61.0") + len("61.0")
    assert header.rindex("LocAcc") + len("LocAcc") == len(header) == len(row)
    assert len(top.rstrip()) <= len(header)
    # the width the label needs is shared evenly by the two columns under it (natural widths 4 and 6)
    end1, end2 = row.index("52.3") + len("52.3"), row.index("61.0") + len("61.0")
    assert abs((end1 - (len("method") + 2) - len("52.3")) - (end2 - (end1 + 2) - len("LocAcc"))) <= 1


def test_groups_that_do_not_cover_the_header_are_refused():
    with pytest.raises(ValueError, match="cover the 3 columns"):
        Table(["a", "b", "c"], [["x", "y", "z"]], groups=[("g", 2)])
    with pytest.raises(ValueError, match="spans of at least 1"):
        Table(["a", "b"], [["x", "y"]], groups=[("g", 0), ("h", 2)])
