"""Opening files from untrusted paths: regular files only, checked on the open descriptor."""

from __future__ import annotations

import errno
import os
import stat
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
