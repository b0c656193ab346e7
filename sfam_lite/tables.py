"""Tables a reader is meant to read: HTML in the rendered book and in Jupyter, aligned text in a terminal.

A chapter builds one from strings it has formatted itself, so the numbers shown are exactly the numbers printed
with ``print(table)``::

    Table(["setting", "pairs", "median"], [["Gaussian", "500", "+0.647"]], caption="Spearman of w and prod")
"""
from __future__ import annotations

import html
from typing import Sequence


def _text(cell) -> str:
    return cell if isinstance(cell, str) else f"{cell[0]} ({cell[1]})"


def _html(cell) -> str:
    if isinstance(cell, str):
        return html.escape(cell)
    return f"{html.escape(cell[0])}<br><small>{html.escape(cell[1])}</small>"


class Table:
    """``header`` names the columns; each row gives one cell per column, a string or ``(value, note)`` (the note
    shown small under the value, in brackets after it in text). The first column is the row's label, left aligned;
    the others are right aligned with tabular figures (the book's ``table.sfam-headline`` style). ``groups``, a
    list of ``(label, columns)`` covering the header from left to right, puts a row of labels above it, each over
    that many columns (e.g. ``[("", 1), ("this book", 3), ("the paper", 2)]``)."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], caption: str = "",
                 groups: Sequence[tuple[str, int]] = ()):
        self.header, self.rows, self.caption = [str(h) for h in header], [list(r) for r in rows], caption
        self.groups = [(str(label), int(span)) for label, span in groups]
        if self.groups and (any(span < 1 for _, span in self.groups)
                            or sum(span for _, span in self.groups) != len(self.header)):
            raise ValueError(f"groups must cover the {len(self.header)} columns with spans of at least 1, got "
                             f"{self.groups!r}.")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"row {i} has {len(row)} cells but the header names {len(self.header)} columns: "
                                 f"{row!r}")
            for cell in row:
                if not (isinstance(cell, str) or (isinstance(cell, tuple) and len(cell) == 2
                                                  and all(isinstance(c, str) for c in cell))):
                    raise TypeError(f"row {i}: a cell is a string or a (value, note) pair of strings, got "
                                    f"{cell!r}; format numbers before building the table.")

    def _repr_html_(self) -> str:
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        groups = "".join(f"<th colspan='{span}'>{html.escape(label)}</th>" for label, span in self.groups)
        head = (f"<tr>{groups}</tr>" if groups else "") + "<tr>" + "".join(
            f"<th>{html.escape(h)}</th>" for h in self.header) + "</tr>"
        body = "".join("<tr>" + "".join(f"<td>{_html(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return f"<table class='sfam-headline'>{caption}<thead>{head}</thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [self.header, *[[_text(c) for c in row] for row in self.rows]]
        widths = [max(len(r[j]) for r in cells) for j in range(len(self.header))]
        lines = [self.caption] if self.caption else []
        start = 0
        for label, span in self.groups:      # widen a group's columns evenly until its label fits over them
            extra = max(0, len(label) - sum(widths[start:start + span]) - 2 * (span - 1))
            for j in range(span):
                widths[start + j] += extra // span + (j >= span - extra % span)
            start += span
        if self.groups:
            edges = [0, *(sum(span for _, span in self.groups[:k + 1]) for k in range(len(self.groups)))]
            lines.append("  ".join(label.ljust(sum(widths[a:b]) + 2 * (b - a - 1))
                                   for (label, _), a, b in zip(self.groups, edges, edges[1:])))
        for row in cells:
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__
