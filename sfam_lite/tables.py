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
    the others are right aligned with tabular figures (the book's ``table.sfam-headline`` style)."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], caption: str = ""):
        self.header, self.rows, self.caption = [str(h) for h in header], [list(r) for r in rows], caption
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
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{_html(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return f"<table class='sfam-headline'>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [self.header, *[[_text(c) for c in row] for row in self.rows]]
        widths = [max(len(r[j]) for r in cells) for j in range(len(self.header))]
        lines = [self.caption] if self.caption else []
        for row in cells:
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__
