"""Refusing a damaged TorchScript file or AOTInductor package before torch opens it.  Both are
zip archives and torch's readers check no CRC; nothing here needs torch."""

from __future__ import annotations

import json
from pathlib import Path

from gradvis_runtime.contract import METADATA_KEY


class DamagedArtifact(ValueError):
    """A TorchScript / AOTInductor file that fails `check_archive` (a ValueError, as every
    damaged-file error of `gradvis_runtime.load`)."""


def check_archive(path: Path, package: bool) -> None:
    """Refuse a damaged TorchScript file (package=False) or AOTInductor package (True) before
    torch opens it, with a ValueError naming the file.  Both are zip archives, and torch's
    readers check no CRC: a damaged weight loads and gives wrong numbers, and AOTInductor
    extracts its shared library and dlopens it as it is (damaged code can crash the process).
    Checked: the archive parses; every member is stored or deflated, not encrypted, under one
    top folder with no absolute or '..' name, and matches its CRC-32; a TorchScript file has
    data.pkl and version (or .data/version); a package says "pt2" in archive_format and has
    the model's shared library and JSON metadata (a JSON object of strings; its "gradvis"
    entry JSON too)."""
    import zipfile

    what = "AOTInductor package" if package else "TorchScript file"

    def refuse(problem: str) -> DamagedArtifact:
        return DamagedArtifact(
            f"{str(path)!r} is not a valid {what} ({problem}); the file is damaged or "
            "truncated: export it again"
        )

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or any("/" not in name for name in names):
                raise refuse("its members are not all in one top folder")
            root = roots.pop()
            for member in members:
                parts = member.filename.split("/")
                if member.filename.startswith("/") or ".." in parts:
                    raise refuse(f"the member {member.filename!r} points outside the archive")
                if member.flag_bits & 0x1:
                    raise refuse(f"the member {member.filename!r} is encrypted")
                if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise refuse(
                        f"the member {member.filename!r} has compression {member.compress_type}"
                    )
            bad = archive.testzip()  # reads every member: CRC-32, sizes, local headers
            if bad is not None:
                raise refuse(f"the member {bad!r} fails its CRC-32 check")
            if not package:
                if f"{root}/data.pkl" not in names:
                    raise refuse("no data.pkl in the archive")
                # torch writes the format version as `version`, or as `.data/version` (seen
                # with torch 2.14 on transformer graphs)
                if not {f"{root}/version", f"{root}/.data/version"} & set(names):
                    raise refuse("no version in the archive")
                return
            if f"{root}/archive_format" not in names:
                raise refuse("no archive_format in the archive")
            if archive.read(f"{root}/archive_format") != b"pt2":
                raise refuse("archive_format is not 'pt2'")
            model = f"{root}/data/aotinductor/model/"
            if not any(n.startswith(model) and n.endswith(".so") for n in names):
                raise refuse("no compiled model (data/aotinductor/model/*.so)")
            found = [n for n in names if n.startswith(model) and n.endswith("_metadata.json")]
            if not found:
                raise refuse("no model metadata (data/aotinductor/model/*_metadata.json)")
            for name in found:
                short = name.rsplit("/", 1)[1]
                try:
                    entries = json.loads(archive.read(name))
                    if isinstance(entries, dict) and isinstance(entries.get(METADATA_KEY), str):
                        json.loads(entries[METADATA_KEY])
                except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
                    raise refuse(f"{short} is not JSON: {error}") from None
                if not isinstance(entries, dict) or not all(
                    isinstance(v, str) for v in entries.values()
                ):
                    raise refuse(f"{short} is not a JSON object of strings")
    except DamagedArtifact:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile's many ways to fail on a damaged file
        raise refuse(f"{type(error).__name__}: {str(error)[:200] or 'unreadable'}") from None
