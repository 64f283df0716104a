"""Checksums of data files, shared by the readers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .._io import open_regular


def _update(digest, path):
    with open_regular(path) as fh:  # a device such as /dev/zero would be hashed forever
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    str
        Hexadecimal.

    Raises
    ------
    OSError
        The file cannot be read, or is not a regular file
        (:class:`xpnet._io.NotRegularFileError`).
    """
    digest = hashlib.sha256()
    _update(digest, path)
    return digest.hexdigest()


def folder_sha256(folder, names) -> str:
    """One SHA-256 over the named files of a folder that exist: each name, then its bytes.

    Parameters
    ----------
    folder : str or Path
        The folder.
    names : iterable of str
        File names, in the order they are hashed.

    Returns
    -------
    str
        Hexadecimal.
    """
    digest = hashlib.sha256()
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode())
            _update(digest, path)
    return digest.hexdigest()
