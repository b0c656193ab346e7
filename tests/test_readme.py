"""Every ```python block of README.md runs as it is written: the blocks run one after the other in one namespace (as
a reader pastes them), in a fresh process and an empty folder. A block that needs data or a download is marked with
an HTML comment `<!-- skip-test: why -->` on the line before its fence; only such blocks are left out."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*skip-test\b")


def python_blocks() -> list[tuple[int, str, bool]]:
    """(line of the block's first code line, code, skipped) for every ```python block of the README."""
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            before = next((line for line in reversed(lines[:i]) if line.strip()), "")
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 2, "\n".join(lines[i + 1:end]) + "\n", bool(SKIP.search(before))))
            i = end
        i += 1
    return blocks


def padded(line: int, code: str) -> str:
    """``code`` preceded by blank lines, so that its line numbers are the README's."""
    return "\n" * (line - 1) + code


def test_the_readme_has_runnable_blocks_and_few_skipped():
    blocks = python_blocks()
    assert sum(not skipped for _, _, skipped in blocks) >= 6
    assert sum(skipped for _, _, skipped in blocks) <= 3, "keep the blocks that cannot run in a test few"
    for line, code, _ in blocks:                       # even a skipped block must be valid Python
        compile(code, f"README.md:{line}", "exec")


def test_every_python_block_runs(tmp_path):
    """Each block is compiled with its README line numbers, so a failure's traceback points into README.md."""
    runner = "\n".join([
        "import sys",
        "namespace = {'__name__': '__main__'}",
        *(f"exec(compile({padded(line, code)!r}, 'README.md', 'exec'), namespace)"
          for line, code, skipped in python_blocks() if not skipped),
        "print('all README blocks ran')",
    ])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.rstrip().endswith("all README blocks ran")
    assert (tmp_path / "explanation.png").is_file()
