"""Files and directories only the node's user may read: the database, chunks, backups, exports.

The process umask is left alone (it belongs to whoever runs the node); what the node creates gets
explicit modes instead: directories 0700, data files 0600. Existing paths keep their modes."""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: str) -> None:
    """Create ``path`` and every missing parent with mode 0700 (``os.makedirs`` gives parents the
    umask's default instead)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass


def create_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (so a library that opens it later,
    such as SQLite, does not create it with the umask's default)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
