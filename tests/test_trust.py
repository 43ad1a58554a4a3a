"""Safe loading: `gradvis_runtime.load` refuses a TorchScript (.pt) or AOTInductor (.pt2)
artifact that another user could have changed (pickled code / a native library runs when it is
loaded) unless the caller passes trust=True; ONNX files are not checked.  With trust=True the
same copy loads and gives the eager explainer's numbers.  And damaged packages are refused with
a ValueError before torch reads them (an AOTInductor package's library is dlopened as it is).

Ownership tests chown a copy to another uid as root (CI runs as root); run as another user they
make this process look like another uid instead.  The group and folder-owner tests need root (a
user may give a file only to their own groups; a folder cannot be made foreign alone)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

import gradvis_runtime

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# (format of the file, backend that loads it): every backend that runs pickled code or a library
PICKLED = [
    ("torchscript", "torchscript"),
    ("aoti", "aoti"),
    ("torchscript", "cpp"),
    ("aoti", "cpp"),
]
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a file to another user's group needs root (CI runs as root)"
)
# pretending to be another uid would make the file itself foreign, reported before its folder
ROOT_ONLY_CHOWN = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a folder to another uid needs root (CI runs as root)"
)


def private_dir(tmp_path: Path, name: str) -> Path:
    """A folder only this user can write, below folders only this user (or root) can write."""
    folder = tmp_path / name
    folder.mkdir(mode=0o700)
    assert gradvis_runtime.untrusted_reason(folder) is None, "the test's own tmp_path is unsafe"
    return folder


def copy_into(folder: Path, fmt: str) -> Path:
    source = rc.artifact("net2d", fmt)
    return Path(shutil.copy(source, folder / source.name))


def assert_matches_eager(runtime: gradvis_runtime.Explainer, label: str) -> None:
    x, target = rc.sample("net2d", 3, 41)
    rc.assert_close(runtime.run(x, target), rc.eager("net2d", x, target), label)


def make_foreign(path: Path, monkeypatch) -> int:
    """Make `path` belong to someone else (as root: chown to another uid; otherwise this
    process pretends to be another uid); returns the uid that now owns it from our view."""
    if os.geteuid() == 0:
        os.chown(path, other_uid(), -1)
        return other_uid()
    owner = os.stat(path).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: other_uid())
    return owner


def other_uid() -> int:
    """A uid that is neither root nor this user (need not exist in the user database)."""
    uid = 4242
    assert uid != os.geteuid()
    return uid


@pytest.mark.parametrize(("fmt", "backend"), PICKLED)
def test_folder_writable_by_others_is_refused_unless_trusted(tmp_path, fmt, backend):
    shared = private_dir(tmp_path, "shared")
    path = copy_into(shared, fmt)
    assert gradvis_runtime.load(path, backend=backend).backend == backend  # private: loads
    shared.chmod(0o777)  # anyone may replace the file: no sticky bit
    with pytest.raises(PermissionError) as refused:
        gradvis_runtime.load(path, backend=backend)
    message = str(refused.value)
    assert repr(str(path)) in message  # names the file,
    assert f"the folder {str(shared)!r} is writable by other users (mode 0777" in message  # why,
    assert "trust=True" in message and "chmod go-w" in message  # and both fixes
    what = "AOTInductor package" if fmt == "aoti" else "TorchScript artifact"
    assert what in message
    trusted = gradvis_runtime.load(path, backend=backend, trust=True, threads=1)
    assert_matches_eager(trusted, f"trusted {fmt} on {backend}")


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_file_writable_by_others_is_refused(tmp_path, fmt):
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    path.chmod(0o646)
    with pytest.raises(PermissionError, match=r"the file is writable by other users \(mode 0646"):
        gradvis_runtime.load(path)
    path.chmod(0o600)
    assert_matches_eager(gradvis_runtime.load(path), f"{fmt} after chmod o-w")


@ROOT_ONLY
@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_file_writable_by_a_shared_group_is_refused(tmp_path, fmt):
    """Group write lets in the group's other members: refused for a group with members other
    than this user and root (here a system user's primary group) and for a gid nobody knows;
    allowed for a group of this user / root alone (a user private group, as umask 002 makes)."""
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    path.chmod(0o660)
    me = os.geteuid()
    shared = next(u for u in pwd.getpwall() if u.pw_uid not in (0, me) and u.pw_gid != 0)
    os.chown(path, -1, shared.pw_gid)
    name = grp.getgrgid(shared.pw_gid).gr_name
    with pytest.raises(PermissionError, match=rf"writable by its group '{name}' \(mode 0660\)"):
        gradvis_runtime.load(path)
    unknown = max(g.gr_gid for g in grp.getgrall()) + 1000
    os.chown(path, -1, unknown)
    with pytest.raises(PermissionError, match="not in the group database"):
        gradvis_runtime.load(path)
    os.chown(path, -1, 0)  # group root: only root is in it here (checked by the rule itself)
    assert gradvis_runtime.untrusted_reason(path) is None
    assert_matches_eager(gradvis_runtime.load(path), f"{fmt} group-writable by root's group")


@pytest.mark.parametrize(("fmt", "backend"), PICKLED)
def test_file_owned_by_another_user_is_refused(tmp_path, fmt, backend, monkeypatch):
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    owner = make_foreign(path, monkeypatch)  # mode 0600 stays: only its owner could change it
    with pytest.raises(PermissionError) as refused:
        gradvis_runtime.load(path, backend=backend)
    message = str(refused.value)
    assert "the file is owned by another user (" in message and f"uid {owner})" in message
    assert "copy the file into a folder of your own" in message and "trust=True" in message
    assert_matches_eager(
        gradvis_runtime.load(path, backend=backend, trust=True), f"{fmt} {backend} trusted"
    )


@ROOT_ONLY_CHOWN
def test_folder_owned_by_another_user_is_refused(tmp_path):
    folder = private_dir(tmp_path, "theirs")
    path = copy_into(folder, "torchscript")
    os.chown(folder, other_uid(), -1)
    with pytest.raises(PermissionError, match=rf"the folder {str(folder)!r} is owned by another"):
        gradvis_runtime.load(path)


def test_sticky_folder_like_tmp_is_fine_for_your_own_file(tmp_path):
    """/tmp is writable by all, but its sticky bit keeps others from replacing your files."""
    sticky = private_dir(tmp_path, "sticky")
    path = copy_into(sticky, "torchscript")
    sticky.chmod(0o1777)
    assert_matches_eager(gradvis_runtime.load(path), "own file in a sticky folder")
    sticky.chmod(0o0777)
    with pytest.raises(PermissionError, match="no sticky bit"):
        gradvis_runtime.load(path)


def test_symbolic_links_are_checked_on_both_paths(tmp_path):
    """A private link to a file in a shared folder, and a link in a shared folder to a
    private file: either way another user could swap what is loaded."""
    shared = private_dir(tmp_path, "shared")
    mine = private_dir(tmp_path, "mine")
    target = copy_into(shared, "torchscript")
    (mine / "link.pt").symlink_to(target)
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match=rf"the folder {str(shared)!r} is writable"):
        gradvis_runtime.load(mine / "link.pt")
    shared.chmod(0o700)
    private = copy_into(mine, "torchscript")
    (shared / "link.pt").symlink_to(private)
    assert_matches_eager(gradvis_runtime.load(shared / "link.pt"), "link in a private folder")
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match=rf"the folder {str(shared)!r} is writable"):
        gradvis_runtime.load(shared / "link.pt")


def test_onnx_is_not_checked(tmp_path):
    """An ONNX file holds no code: it loads from a folder anyone may write."""
    shared = private_dir(tmp_path, "shared")
    path = copy_into(shared, "onnx")
    path.chmod(0o666)
    shared.chmod(0o777)
    assert gradvis_runtime.untrusted_reason(path) is not None  # the rule would refuse it
    assert_matches_eager(gradvis_runtime.load(path, threads=1), "onnx in a shared folder")


# ----------------------------------------------------------------------------- damaged packages


def flip(path: Path, member_suffix: str, offset: int) -> None:
    """Flip one byte of the first member whose name ends in member_suffix (stored members)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    assert info.compress_type == zipfile.ZIP_STORED
    data = bytearray(path.read_bytes())
    header = info.header_offset  # the local header's name and extra lengths, then the data
    name, extra = struct.unpack("<HH", data[header + 26 : header + 30])
    start = header + 30 + name + extra
    data[start + offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("fmt", "backend", "member"),
    [
        ("aoti", "aoti", ".so"),  # torch would dlopen it as it is
        ("aoti", "cpp", ".so"),
        ("aoti", "aoti", "wrapper_metadata.json"),
        ("torchscript", "torchscript", "data/4"),  # a weight: torch would load wrong numbers
        ("torchscript", "cpp", "data/4"),
    ],
)
def test_damaged_package_is_refused_before_torch_reads_it(tmp_path, fmt, backend, member):
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    flip(path, member, 5000 if member == ".so" else 3)
    what = "AOTInductor package" if fmt == "aoti" else "TorchScript file"
    with pytest.raises(ValueError, match=rf"is not a valid {what} \(the member .*{member}' fails"):
        gradvis_runtime.load(path, backend=backend, trust=True)


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_truncated_or_foreign_zip_is_refused(tmp_path, fmt):
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"BadZipFile.*damaged or truncated: export it again"):
        gradvis_runtime.load(path)
    with zipfile.ZipFile(path, "w") as archive:  # a valid zip, but no artifact
        archive.writestr("notes/readme.txt", "hello")
    need = "archive_format" if fmt == "aoti" else "data.pkl"
    with pytest.raises(ValueError, match=f"no {need} in the archive"):
        gradvis_runtime.load(path)


def rewrite_metadata(path: Path, change) -> None:
    """Rewrite the gradvis metadata inside a sound archive (CRCs recomputed): `change` maps the
    metadata's JSON text to the new text."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            if info.filename.endswith("extra/gradvis.json"):
                data = change(data.decode()).encode()
            elif info.filename.endswith("_metadata.json"):
                entries = json.loads(data)
                entries["gradvis"] = change(entries["gradvis"])
                data = json.dumps(entries).encode()
            archive.writestr(info, data)


@pytest.mark.parametrize(("fmt", "backend"), PICKLED)
def test_wrong_metadata_in_a_sound_archive_is_refused(tmp_path, fmt, backend):
    """The archive is intact, its contract is not: the contract check refuses it, on every
    backend, before any run."""
    path = copy_into(private_dir(tmp_path, "mine"), fmt)
    rewrite_metadata(path, lambda text: text)  # rezipped, unchanged: still loads
    assert_matches_eager(gradvis_runtime.load(path, backend=backend), f"{fmt} rezipped")
    rewrite_metadata(path, lambda text: text.replace('"float32"', '"float33"'))
    # Python and the C++ library alike: "...: the gradvis contract's field 'inputs[0].dtype'
    # is 'float33', not one of float32, ...; export the artifact again with gradvis_export"
    with pytest.raises(
        ValueError, match=r"contract's field 'inputs\[0\]\.dtype' is 'float33'.*export"
    ):
        gradvis_runtime.load(path, backend=backend)
    rewrite_metadata(path, lambda text: text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"(metadata|JSON).*export it again"):
        gradvis_runtime.load(path, backend=backend)


def test_cli_refuses_an_untrusted_artifact_in_one_line(tmp_path, capsys):
    """The command line turns the refusal into its one-line error and exit code 2."""
    from gradvis_export.apps import cli

    shared = private_dir(tmp_path, "shared")
    path = copy_into(shared, "torchscript")
    shared.chmod(0o777)
    assert cli.main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradvis: error: ") and "writable by other users" in err
    assert len(err.strip().splitlines()) == 1
