"""Files opened from untrusted paths (regular files only) and files written atomically.

A path's type is checked on the opened descriptor, so the file checked is the file read.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


class NotRegularFileError(OSError):
    """A path names a FIFO, a socket or a device (``/dev/zero``): reading it may never end."""


def open_regular(path) -> BinaryIO:
    """Open ``path`` for reading in binary mode if it is a regular file.

    The file is opened without blocking (a FIFO with no writer would block ``open``
    itself) and its type checked on the descriptor, so that the file checked is the file
    read.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    file object
        Open for binary reading; the caller closes it.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    IsADirectoryError
        ``path`` is a directory.
    NotRegularFileError
        ``path`` is a FIFO, a socket or a device.
    OSError
        Another reason the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def atomic_write(path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the
    file is renamed over ``path``; on any failure (a full disk, an interruption) the
    temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The destination; its folder must exist.
    blob : bytes
        The file's whole content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


#: Environment variable that sets :func:`max_input_bytes` (a number of bytes).
MAX_INPUT_BYTES_ENV = "XPNET_MAX_INPUT_BYTES"
#: The most a compressed member or stream that claims more than :data:`BOMB_FLOOR` bytes
#: may expand. Deflate reaches about 1030 on constant data (a "bomb"); real features
#: compress 2-20 fold (MNIST's gzipped images 5).
MAX_EXPANSION = 200
#: Claims up to this many bytes are inflated whatever their ratio: labels sorted by class
#: compress a thousandfold too, and at this size inflating costs well under a second.
BOMB_FLOOR = 64 * 1024 * 1024


def host_memory_bytes() -> int | None:
    """The memory this process can have on the host.

    The machine's physical memory, or the process's address-space limit (``ulimit -v``)
    where that is lower. A container's cgroup limit is not read, so inside one this may
    say more than the process can use.

    Returns
    -------
    int or None
        Bytes; None where the system does not say (no POSIX ``sysconf``: Windows).
    """
    try:
        import resource

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, AttributeError, ValueError, OSError):
        return None
    return total if soft == resource.RLIM_INFINITY else min(total, soft)


def max_input_bytes() -> int:
    """The most bytes one array read from a data file may take in memory.

    The memory this process can have (:func:`host_memory_bytes`), or the value of the
    environment variable ``XPNET_MAX_INPUT_BYTES``. A file that claims more is refused
    before anything is allocated; memory-mapped ``.npy`` features are not held in memory
    and not limited.

    Returns
    -------
    int
        Bytes.
    """
    given = os.environ.get(MAX_INPUT_BYTES_ENV)
    if given:
        try:
            return int(given)
        except ValueError:
            pass  # an unreadable setting falls back to the machine's memory
    memory = host_memory_bytes()
    return 2**40 if memory is None else memory  # the system does not say: no bound but 2**40
