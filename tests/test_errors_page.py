"""book/errors.md lists the messages a user can meet: each phrase it quotes must occur in the code's messages, so
that the page cannot drift from what the code says."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "\n".join(p.read_text() for folder in ("sfam_lite", "data_download") for p in (ROOT / folder).rglob("*.py"))


def quoted_phrases() -> list[str]:
    rows = [line for line in (ROOT / "book" / "errors.md").read_text().splitlines() if line.startswith("| `")]
    phrases = [p for row in rows for p in re.findall(r"`([^`]+)`", row.split("|")[1])]
    # the fixed parts of each phrase ("…" stands for a value that changes)
    return [part.strip() for p in phrases for part in p.split("…") if len(part.strip()) >= 5]


def test_the_page_quotes_many_messages():
    assert len(quoted_phrases()) >= 20


@pytest.mark.parametrize("phrase", quoted_phrases())
def test_each_quoted_phrase_is_in_a_message(phrase):
    assert phrase in SOURCE, f"book/errors.md quotes {phrase!r}, which no message of the code contains"
