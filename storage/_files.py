"""Backup and export files readable by their owner only, whatever the process umask.

A backup holds every conversation and every password hash: it is created ``0600`` inside
directories created ``0700``. Directories that already exist are left as they are (the caller
may have chosen ``/srv/backups`` on purpose), except the server's own backup directory, which
``private_dir(..., tighten=True)`` closes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def private_dir(directory: str | os.PathLike[str], *, tighten: bool = False) -> None:
    """Create ``directory`` and its missing parents with mode 0700 (not umask-dependent).

    With ``tighten``, an existing ``directory`` is also set to 0700 (its parents are not).
    """
    target = Path(directory)
    missing: list[Path] = []
    current = target
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: not ours to change
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    if tighten:
        os.chmod(target, DIR_MODE)


def create_private_file(path: str | os.PathLike[str]) -> int:
    """Open ``path`` for writing, empty, mode 0600; returns the descriptor (caller closes it).

    An existing file (a leftover ``.partial``) is truncated and its mode reset; a symlink is
    refused (``O_NOFOLLOW``), so a planted link cannot redirect the backup.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
