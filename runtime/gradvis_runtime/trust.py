"""Which artifacts may be loaded without `trust=True`: TorchScript and AOTInductor files run
code when loaded, so they must come from a place no other user can change (see `load`)."""

from __future__ import annotations

import os
from pathlib import Path

_CODE = {
    "torchscript": "A TorchScript artifact holds pickled code",
    "aoti": "An AOTInductor package holds a native shared library",
}


def refuse_untrusted(path: Path, kind: str) -> None:
    """Raise PermissionError when another user could have changed `path` (see `load`)."""
    found = untrusted_reason(path)
    if found is None:
        return
    reason, where = found
    fix = (
        f"`chmod go-w {str(where)!r}`"
        if "writable" in reason
        else f"copy the file into a folder of your own, or `chown` {str(where)!r} to you"
    )
    raise PermissionError(
        f"refusing to load {str(path)!r}: {reason}.  {_CODE[kind]} that runs when "
        "it is loaded, so it is loaded only from a place no other user can change: fix the "
        f"permissions ({fix}) or, if you trust the file, pass trust=True"
    )


def untrusted_reason(path: str | os.PathLike) -> tuple[str, Path] | None:
    """Why another user could change the file at `path` (the reason and the file or folder at
    fault), or None when no one but you and root can.  Checks the file and every folder up to
    the root, on the path as given (symbolic links themselves included) and once resolved.
    Always None where there are no POSIX users (Windows)."""
    import stat

    if not hasattr(os, "geteuid"):
        return None
    me = os.geteuid()
    given = Path(os.path.abspath(path))
    resolved = Path(os.path.realpath(path))
    places = list(dict.fromkeys([given, *given.parents, resolved, *resolved.parents]))
    for place in places:
        info = os.lstat(place)  # a link is checked itself, its target once resolved
        link = stat.S_ISLNK(info.st_mode)
        if link:
            what = f"the symbolic link {str(place)!r}"
        else:
            what = "the file" if place in (given, resolved) else f"the folder {str(place)!r}"
        if info.st_uid not in (me, 0):
            return f"{what} is owned by another user ({_user(info.st_uid)})", place
        if link or (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
            continue  # no one changes a link; in a sticky folder, only what they own
        mode = f"mode {stat.S_IMODE(info.st_mode):04o}"
        if info.st_mode & stat.S_IWOTH:
            return f"{what} is writable by other users ({mode}, no sticky bit)", place
        if info.st_mode & stat.S_IWGRP:
            others = _other_members(info.st_gid, me)
            if others:
                return (
                    f"{what} is writable by its group {_group(info.st_gid)!r} ({mode}), "
                    f"which {others}",
                    place,
                )
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def _other_members(gid: int, me: int) -> str | None:
    """None when group `gid` has no member but you and root (a user private group, as umask
    002 systems give every user): its write permission lets no one else in.  Else what is
    wrong with it, for the message."""
    import grp
    import pwd

    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return "is not in the group database (its members are unknown)"
    members: set[int] = {u.pw_uid for u in pwd.getpwall() if u.pw_gid == gid}
    for name in group.gr_mem:
        try:
            members.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            return f"has the unknown member {name!r}"
    others = sorted(members - {me, 0})
    return f"has other members ({', '.join(_user(u) for u in others)})" if others else None
