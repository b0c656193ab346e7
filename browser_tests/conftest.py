"""Which Chromium the browser test ran on, printed with the results: text metrics differ between Chromium
releases and font sets, so a verdict about a line's fit is read together with the browser that gave it."""
from __future__ import annotations

import functools
import os
import subprocess


@functools.lru_cache(maxsize=None)
def chromium_version() -> str:
    binary = os.environ.get("SFAM_CHROMIUM", "/usr/bin/chromium")
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{binary}: version not read ({e})"
    return f"{out or 'no version printed'} ({binary})"


def pytest_report_header(config):
    return f"browser: {chromium_version()}"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"browser test ran on {chromium_version()}")
