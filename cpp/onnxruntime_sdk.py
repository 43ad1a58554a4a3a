"""Assemble an ONNX Runtime C/C++ SDK folder for the C++ library's optional ONNX backend
(CMake's ONNXRUNTIME_ROOT), from packages this machine can reach.

No pip package ships ONNX Runtime's headers; Debian's `libonnxruntime-dev` does (release 1.21,
from Debian 13's pool: a header-only package, fetched as a file from the Debian archive this
machine's apt sources name -- or `--archive URL` -- checked by its SHA-256 and unpacked here;
nothing is installed into the system).  The library itself is the one the `onnxruntime` pip package
installs (capi/libonnxruntime.so.<version>).  The C++ headers wrap ONNX Runtime's C API, which
stays backward compatible: headers of API version 21 run on any newer library.

    python cpp/onnxruntime_sdk.py build/onnxruntime-sdk
    GRADVIS_ONNXRUNTIME_ROOT=build/onnxruntime-sdk pip install --no-build-isolation -e .

With ONNX Runtime's own release archive (onnxruntime-linux-x64-<version>.tgz, which has
include/ and lib/), point ONNXRUNTIME_ROOT at its folder instead; this script is not needed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

#: the package's place in any Debian archive (the same file on every mirror: SHA-256 below)
DEB_PATH = "pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
APT_SOURCES = Path("/etc/apt")
DEB_SHA256 = "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
HEADERS = "usr/include/onnxruntime/"


def ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a Unix `ar` archive (a .deb is one) by name."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def _one_line_sources(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of the `deb URI suite component...` lines of a .list file."""
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 4 and words[0] == "deb":
            if words[1].startswith("["):  # options: [arch=amd64 signed-by=...]
                while words and not words[1].endswith("]"):
                    words.pop(1)
                words.pop(1)
            if len(words) >= 4:
                found.append((words[1], [words[2]], words[3:]))
    return found


def _deb822_sources(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of each enabled `Types: deb` stanza of a .sources file."""
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
            for uri in fields.get("uris", []):
                found.append((uri, fields.get("suites", []), fields.get("components", [])))
    return found


def archive_from_apt(root: Path = APT_SOURCES) -> str:
    """The Debian archive this machine's apt is configured with (sources.list and
    sources.list.d): the first `main` archive that is not the security one."""
    entries = []
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            entries += _deb822_sources(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            entries += _one_line_sources(text)
    for uri, suites, components in entries:
        security = "security" in uri or any("security" in s for s in suites)
        if "main" in components and not security and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    raise SystemExit(
        f"no Debian archive with 'main' in the apt sources under {root}; pass --archive URL "
        "(the base of a Debian archive, the folder that holds pool/)"
    )


def fetch_headers(include: Path, url: str) -> int:
    """Download the .deb, check its SHA-256, unpack its headers into `include`; their count."""
    with urllib.request.urlopen(url, timeout=120) as response:
        deb = response.read()
    digest = hashlib.sha256(deb).hexdigest()
    if digest != DEB_SHA256:
        raise SystemExit(f"{url}: SHA-256 {digest}, expected {DEB_SHA256}; not unpacked")
    data = next(v for k, v in ar_members(deb).items() if k.startswith("data.tar"))
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if not (member.isfile() and name.startswith(HEADERS) and name.endswith(".h")):
                continue
            target = include / name[len(HEADERS) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            count += 1
    return count


def link_library(lib: Path) -> Path:
    """lib/libonnxruntime.so and .so.1 (its soname) -> the onnxruntime pip package's library."""
    try:
        import onnxruntime
    except ImportError:
        raise SystemExit("install onnxruntime first (pip install onnxruntime)") from None
    capi = Path(onnxruntime.__file__).resolve().parent / "capi"
    found = sorted(capi.glob("libonnxruntime.so*"))
    if not found:
        raise SystemExit(f"onnxruntime {onnxruntime.__version__} has no libonnxruntime.so*")
    lib.mkdir(parents=True, exist_ok=True)
    for name in ("libonnxruntime.so", "libonnxruntime.so.1"):
        (lib / name).unlink(missing_ok=True)
        (lib / name).symlink_to(found[-1])
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the SDK folder to write (include/, lib/)")
    parser.add_argument(
        "--archive",
        default=None,
        help="base URL of a Debian archive (default: the one in this machine's apt sources)",
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if (out / "include").exists():
        shutil.rmtree(out / "include")
    url = f"{(args.archive or archive_from_apt()).rstrip('/')}/{DEB_PATH}"
    count = fetch_headers(out / "include", url)
    library = link_library(out / "lib")
    print(f"{out}: {count} headers from {DEB_PATH.rsplit('/', 1)[-1]}, lib -> {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
