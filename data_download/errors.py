"""The one exception type the data commands raise for problems a user can fix."""
from __future__ import annotations

from contextlib import contextmanager


class DataError(RuntimeError):
    """A download, verification, extraction or dataset problem, explained in one paragraph.

    The message names the cause and the manual fix; the command line prints it without a traceback
    and exits with status 1.
    """


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset folder is missing or incomplete; the message holds the command that creates it."""


def os_error_message(exc: OSError, path: object) -> str:
    """One sentence naming a file-system failure at ``path`` and what to do about it."""
    import errno

    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"The disk is full (or a file-size limit was reached) while writing {path} ({exc.strerror}). "
                "Free some space or pass another --root on a disk with room, then run the command again.")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"Cannot write to {path}: the location is read-only or you lack permission ({exc.strerror}). "
                "Pass a writable folder with --root, then run the command again.")
    return f"Writing {path} failed: {exc}. Check the folder and the disk, then run the command again."


@contextmanager
def disk_errors(path: object, message=os_error_message):
    """Turn an ``OSError`` raised in the block into a :class:`DataError` with ``message(exc, path)`` (default:
    :func:`os_error_message`, for writes); DataErrors pass through unchanged."""
    try:
        yield
    except DataError:
        raise
    except OSError as exc:
        raise DataError(message(exc, path)) from None
