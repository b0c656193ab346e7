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


def fake_test(n_classes: int = 6, per_class: int = 8, seed: int = 0, size: int = 32):
    """A seeded :class:`sfam_lite.evaluation.EvalSet` of noise images ``(n, 3, size, size)``, ``per_class`` of each
    class in order, with random boxes of at least 6 px inside the image."""
    import torch
    from sfam_lite.evaluation import EvalSet
    g = torch.Generator().manual_seed(seed)
    n = n_classes * per_class
    xy = torch.randint(0, size // 2, (n, 2), generator=g).float()
    wh = torch.randint(6, size // 2, (n, 2), generator=g).float()
    return EvalSet(torch.randn(n, 3, size, size, generator=g), torch.arange(n_classes).repeat_interleave(per_class),
                   torch.cat([xy, wh], 1))
