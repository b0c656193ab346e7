"""Helpers several test files share."""
from __future__ import annotations

import resource
import signal


def file_size_limit(nbytes: int):
    """A ``preexec_fn`` for ``subprocess.run``: in the child, every write past ``nbytes`` bytes of one file fails
    as on a full disk (``EFBIG``; SIGXFSZ ignored so that the write raises instead of killing the process)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit
