"""Run folders: what a run leaves on disk, and the lock that gives each folder one owner.

A run folder holds ``resume.safetensors`` (rewritten atomically after every epoch: the
model, the optimizer's state, the shuffling generator's state, early stopping's
bookkeeping and the history), and at the end ``model.safetensors``, ``metrics.json`` and
``curves.png``. One process trains in a folder at a time (:func:`owned_folder`), and a
new run does not overwrite a folder that holds another (:func:`refuse_a_used_folder`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from ..errors import RunError

__all__ = [
    "LOCK_FILE",
    "RESUME_FILE",
    "RUN_FILES",
    "new_folder_name",
    "owned_folder",
    "refuse_a_used_folder",
]

RESUME_FILE = "resume.safetensors"


#: The file whose OS lock marks the process that owns a run folder (it holds that pid).
LOCK_FILE = ".xpnet.lock"


#: Files of a finished run, which a new run does not overwrite without ``--force``.
RUN_FILES = ("model.safetensors", "metrics.json", RESUME_FILE)


@contextlib.contextmanager
def owned_folder(folder):
    """Hold ``folder``'s exclusive lock while the block runs.

    One process trains in a run folder at a time. The lock is the operating system's
    (``fcntl.flock`` on :data:`LOCK_FILE`), so it is released when the process ends however
    it ends; nothing stale is left to clean up. The folder is created if missing. Where
    the platform has no ``fcntl`` (Windows), nothing is locked.

    Parameters
    ----------
    folder : Path
        The run folder.

    Yields
    ------
    None
        While the lock is held.

    Raises
    ------
    RunError
        Another process holds the folder (the message gives its pid), or the folder cannot
        be created.
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create the run folder {folder}: {err.strerror}") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks here: nothing to hold
        yield
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{folder} is in use by another xpnet process (pid {holder}); wait for it "
                f"to end, or choose another --out"
            ) from None
        locked = True
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if locked and created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()  # a run that wrote nothing leaves no folder,
            with contextlib.suppress(OSError):  # nor the parents made for it (runs/)
                for made in created:
                    made.rmdir()
        os.close(fd)  # releases the lock


def new_folder_name(dataset):
    """The default folder of a new run: ``runs/<dataset>-<time>``.

    Parameters
    ----------
    dataset : str
        The dataset's name or path (its stem names the folder).

    Returns
    -------
    Path
        Relative to the working directory.
    """
    stem = Path(str(dataset)).stem
    return Path("runs") / f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def refuse_a_used_folder(folder, *, force, comm=None):
    """Refuse a new run in a folder that holds another's files, or clear them with ``force``.

    Under MPI the first process decides for all.

    Parameters
    ----------
    folder : Path
        The new run's folder.
    force : bool
        Remove a finished run's files instead of refusing.
    comm : MPICommunicator, optional
        The processes of a data-parallel run.

    Raises
    ------
    RunError
        The folder holds a run: one to resume, or a finished one without ``force``.
    """
    found = (
        [name for name in RUN_FILES if (folder / name).exists()]
        if comm is None or comm.rank == 0
        else None
    )
    if comm is not None:
        found = comm.broadcast(found)
    if not found:
        return
    if force:
        if comm is None or comm.rank == 0:
            for name in (*RUN_FILES, "curves.png"):
                (folder / name).unlink(missing_ok=True)
        return
    if RESUME_FILE in found:
        raise RunError(
            f"{folder} already holds a run; continue it with --resume {folder}, choose "
            f"another --out, or pass --force to replace it"
        )
    raise RunError(
        f"{folder} holds the files of a finished run ({', '.join(found)}); choose another "
        f"--out, or pass --force to replace them"
    )
