"""Writing outputs safely: checks before the work, one-line errors when a write fails, and the
cleanup of hidden temporary files a killed run left behind.

Every command writes its outputs under hidden temporary names next to them and renames them
into place when whole, so a failure (disk full, a read-only folder) never leaves half a file
and never touches an older output of the same name.  A SIGKILL cannot run cleanup code, so the
next run of the same output removes the stale temporary files (`remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

from gradvis_export.errors import GradvisError, InputError, OutputError

#: errno values that mean "this output cannot be written here" (not a bug, not a bad input)
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.EIO,
}


def _hidden_to_visible(name: str) -> str:
    """`.a.mp4.part` -> `a.mp4`, `.a.staged-1f2e.mp4` -> `a.mp4`: the output a temporary file
    stands for (users never chose the hidden name, so messages name the output)."""
    if name.startswith(".") and name.endswith(".part"):
        name = name[1:-5]
    match = _STAGED.fullmatch(name)
    return f"{match[1]}.{match[2]}" if match else name


#: `gradvis batch`'s workers write `.STEM.staged-TAG.SUFFIX` (TAG: the job's fingerprint); the
#: parent renames it into place after the manifest recorded the video, so an output on disk
#: always has its record
_STAGED = re.compile(r"\.(.+)\.staged-[0-9a-zA-Z]+\.([^.]+)")


def staged(path: str | os.PathLike, tag: str) -> Path:
    """The hidden name a batch worker writes `path` under until the parent has recorded it
    (the suffix kept: the container follows it; `tag` tells one run's files from another's)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.staged-{tag}{path.suffix}")


def staged_glob(path: str | os.PathLike) -> str:
    """A glob of every staged name of `path` (any tag), relative to its folder."""
    path = Path(path)
    return f".{glob.escape(path.stem)}.staged-*{glob.escape(path.suffix)}"


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def output_error(error: OSError, path: str | os.PathLike, flag: str = "--out") -> OutputError:
    """`error` (raised writing `path`, or its temporary file) as one line naming the output,
    the cause and the fix."""
    path = Path(path)
    shown = path.with_name(_hidden_to_visible(path.name))
    folder = str(shown.parent)
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "disk quota exceeded" if code == errno.EDQUOT else "no space left on the device"
        if code == errno.EFBIG:
            why = "the file is too large for this file system"
        fix = f"free some space in {folder!r} or give {flag} on another disk"
    elif code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _read_only(shown.parent)):
        why = f"the folder {folder!r} is on a read-only file system"
        fix = f"give {flag} in a writable folder"
    elif code in (errno.EACCES, errno.EPERM):
        why, fix = f"permission denied in {folder!r}", f"give {flag} in a folder you can write to"
    elif code == errno.EISDIR or shown.is_dir():
        why, fix = "it is a folder", f"give {flag} a file name (e.g. {str(shown / 'out')!r})"
    elif code in (errno.ENOTDIR, errno.ENOENT):
        why, fix = f"the folder {folder!r} does not exist", f"create it or give another {flag}"
    else:
        text = getattr(error, "strerror", None) or " ".join(str(error).split())
        why, fix = text, f"check {folder!r} or give another {flag}"
    older = shown.exists() and code != errno.EISDIR and not why.startswith("it is a folder")
    kept = " (the older one of that name is kept as it was)" if older else ""
    return OutputError(f"cannot write {str(shown)!r}: {why}; {fix}{kept}")


def is_write_error(error: BaseException) -> bool:
    """An OSError of the kind a full, read-only or forbidden output gives (not a bug)."""
    return isinstance(error, OSError) and getattr(error, "errno", None) in WRITE_ERRNOS


@contextlib.contextmanager
def writing(path: str | os.PathLike, flag: str = "--out") -> Iterator[None]:
    """Write failures in the block (OSError: disk full, read-only, permission, a folder in the
    way) become one-line `OutputError`s naming `path`; anything else passes unchanged."""
    try:
        yield
    except GradvisError:
        raise
    except OSError as error:
        if not is_write_error(error):
            raise
        raise output_error(error, path, flag) from None


def check_output(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before any work, an output that cannot be written: a folder in its place, a
    missing, read-only or forbidden folder.  Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a folder; give a file name inside it")
    folder = path.parent
    if not folder.exists():
        raise InputError(f"the output folder {str(folder)!r} does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(f"{flag} {str(path)!r}: {str(folder)!r} is a file, not a folder")
    if _read_only(folder):
        raise output_error(OSError(errno.EROFS, "read-only"), path, flag)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise output_error(OSError(errno.EACCES, "permission denied"), path, flag)
    return path


def temporary(path: str | os.PathLike) -> Path:
    """The hidden name `path` is written under until it is whole: `.NAME.part` next to it."""
    path = Path(path)
    return path.with_name(f".{path.name}.part")


def remove_stale(*paths: str | os.PathLike | None) -> None:
    """Remove the temporary files (`.NAME.part`) of these outputs that a killed run left
    behind (a SIGKILL runs no cleanup code); a file, never a folder."""
    for path in paths:
        if path is None:
            continue
        tmp = temporary(path)
        with contextlib.suppress(OSError):
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink()


@contextlib.contextmanager
def folder_claim(folder: str | os.PathLike, stale: str | None = None) -> Iterator[None]:
    """Hold a shared lock on `folder` for the block; first, if no other gradvis process holds
    one, remove the files matching the glob `stale` there (temporary files with random names
    a killed run left: no other process can be writing them, since every writer holds the
    lock).  Nothing is written for the lock (flock on the folder itself)."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # the caller's own checks report a missing folder
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another writer is at work here: leave every temporary file alone
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            if stale:
                for path in Path(folder).glob(stale):
                    with contextlib.suppress(OSError):
                        if path.is_file():
                            path.unlink()
            fcntl.flock(fd, fcntl.LOCK_SH)  # others may now write beside us
        yield
    finally:
        os.close(fd)
