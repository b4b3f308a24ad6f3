"""The data directory: making it, and saying in one line why it cannot be used.

Owns: ``make_data_dir``, and turning an OSError met on the data directory into a sentence that
names the path, the cause and what to do (``describe_os_error``, also used by ``exchange up`` for
an OSError from anywhere in the daemon). Must not: create anything but the directory itself, or
swallow an error.
"""

import errno
import os
import pwd
from pathlib import Path

from exchange.daemon.errors import DataDirUnusableError


def make_data_dir(root: Path) -> None:
    """Makes ``root`` (mode 0700, with its parents) unless it is a directory already.

    Raises DataDirUnusableError, having created nothing, when a file stands in its place or on its
    path, the filesystem is read-only, this user may not write there, or the disk is full.
    """
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise data_dir_unusable(root, exc) from exc


def data_dir_unusable(root: Path, exc: OSError) -> DataDirUnusableError:
    """The DataDirUnusableError for ``exc``, met while making or writing the data directory."""
    if exc.errno == errno.EEXIST:
        return DataDirUnusableError(
            f"the data directory {root} is a file, not a directory: pass --data a directory (it "
            "is made if missing)"
        )
    if exc.errno == errno.ENOTDIR:
        return DataDirUnusableError(
            f"the data directory {root} cannot be made: a part of that path is a file, not a "
            "directory; pass another --data directory"
        )
    # The directory, not the file in it that failed (the lock): that is what a person fixes.
    return DataDirUnusableError(describe_os_error(exc, path=root))


def describe_os_error(exc: OSError, *, path: Path | None = None) -> str:
    """One line for a person: which path, what is wrong with it, what to do.

    ``path`` names the path instead of the one the error carries.
    """
    path = path if path is not None else exc.filename
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the disk holding {path} is full (or its quota is used up): free space and start "
            "again (nothing acknowledged is lost)"
        )
    if exc.errno == errno.EROFS:
        return (
            f"{path} is on a read-only filesystem, and the exchange writes its journal there: "
            "remount it read-write, or pass another --data directory"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to write {path} as user {_user_name()}, and the exchange writes its "
            "journal there: give this user write access (chown/chmod), or pass another --data "
            "directory"
        )
    return f"cannot use {path}: {exc.strerror or exc}"


def _user_name() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        # A uid without a passwd entry, as in many containers.
        return str(uid)
