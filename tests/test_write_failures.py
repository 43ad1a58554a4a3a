"""Write failures are one line and exit code 2, leave no partial file and keep older outputs.

Disk full and read-only folders are real where this process may mount (root): a tiny tmpfs
filled to the last byte, then remounted read-only (chmod does not stop root).  Elsewhere those
tests skip, and the same failures are injected (an OSError with ENOSPC / EROFS where the writer
raises it), so the messages are checked everywhere.  A folder where a file should go and the
stale temporary files a SIGKILLed run leaves are plain files.  The model is a two-convolution
image network (`--model net.py:make --size 16`): the tests measure the writing, not a network.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]

from videos import encode

from gradvis_export.apps import cli, train
from gradvis_export.apps.outputs import output_error
from gradvis_export.errors import OutputError

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

NET = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
"""
OLDER = b"an older output of the same name"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The model factory and a 6-frame 64x48 video."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    encode(folder / "in.mp4", frames, 64, 48, fps=6)
    return folder


def model_args(workdir: Path) -> list[str]:
    return ["--model", f"{workdir / 'net.py'}:make", "--size", "16"]


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def assert_one_line(code: int, err: list[str], *words: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("gradvis: error: "), err
    assert "Traceback" not in err[0] and "Errno" not in err[0], err
    for word in words:
        assert word in err[0], err


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A 256 kB tmpfs (skips where mounting is not allowed); unmounted afterwards."""
    folder = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount(folder, "size=256k,mode=0777"):
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "cannot mount a tmpfs here (needs root and mount rights; CI has both, so there it fails)"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` to the last byte (unbuffered: each write is one)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def read_only(folder: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
    assert done.returncode == 0, done.stderr


def older(folder: Path, *names: str) -> dict[str, bytes]:
    for name in names:
        (folder / name).write_bytes(OLDER)
    return {name: OLDER for name in names}


def contents(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and "filler" not in p.name
    }


# ----------------------------------------------------------------------------- explain


def test_explain_disk_full_is_one_line_and_keeps_the_older_output(workdir, disk, capsys):
    before = older(disk, "a.mp4", "a.json")
    fill(disk)
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(disk / "a.mp4"), "--quiet"]  # fmt: skip
    code, err = run(argv, capsys)
    assert_one_line(code, err, "no space left", "a.", "free some space", "kept")
    assert ".part" not in err[0]
    assert contents(disk) == before  # no partial file, the older outputs intact


def test_explain_read_only_folder_is_one_line_before_any_work(workdir, disk, capsys):
    before = older(disk, "a.mp4", "a.json")
    read_only(disk)
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(disk / "a.mp4"), "--quiet"]  # fmt: skip
    code, err = run(argv, capsys)
    assert_one_line(code, err, "read-only", str(disk), "writable folder")
    assert contents(disk) == before


def test_explain_injected_disk_full_in_the_encoder(workdir, tmp_path, capsys, monkeypatch):
    """ENOSPC from the muxer mid-video (what PyAV raises: av.error.OSError, errno 28)."""
    import av

    from gradvis_export.apps.video import encode as encode_module

    def full(self, frame, duration):
        raise av.error.OSError(errno.ENOSPC, "No space left on device", ".a.mp4.part")

    monkeypatch.setattr(encode_module.Mp4Write, "_encode", full)
    before = older(tmp_path, "a.mp4", "a.json")
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(tmp_path / "a.mp4"), "--quiet"]  # fmt: skip
    code, err = run(argv, capsys)
    assert_one_line(code, err, f"cannot write {str(tmp_path / 'a.mp4')!r}", "no space left")
    assert contents(tmp_path) == before


def test_explain_injected_read_only_and_permission_denied(workdir, tmp_path, capsys, monkeypatch):
    from gradvis_export.apps import outputs

    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(tmp_path / "a.mp4"), "--quiet"]  # fmt: skip
    monkeypatch.setattr(outputs, "_read_only", lambda folder: True)
    assert_one_line(*run(argv, capsys), "read-only file system")
    monkeypatch.setattr(outputs, "_read_only", lambda folder: False)
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    assert_one_line(*run(argv, capsys), "permission denied", "a folder you can write to")
    assert list(tmp_path.iterdir()) == []


def test_explain_output_that_is_a_folder(workdir, tmp_path, capsys):
    (tmp_path / "a.mp4").mkdir()
    (tmp_path / "a.json").mkdir()
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--quiet"]
    assert_one_line(*run([*argv, "--out", str(tmp_path / "a.mp4")], capsys), "is a folder")
    side = ["--out", str(tmp_path / "b.mp4"), "--json", str(tmp_path / "a.json")]
    assert_one_line(*run([*argv, *side], capsys), "--json", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.mp4"]


def test_explain_removes_stale_temporary_files_of_its_outputs(workdir, tmp_path, capsys):
    """What a SIGKILLed run leaves (a 0-byte `.a.json.part`) goes on the next run; other
    hidden files stay."""
    for name in (".a.json.part", ".a.mp4.part", ".other.json.part"):
        (tmp_path / name).write_bytes(b"")
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(tmp_path / "a.mp4"), "--quiet"]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.part", "a.json", "a.mp4"]


def test_explain_sigkill_leaves_only_what_the_next_run_removes(workdir, tmp_path):
    """A run SIGKILLed while writing: its `.part` files are the only trace, gone after the
    next run of the same outputs."""
    import signal
    import time

    video = tmp_path / "long.mp4"
    rng = np.random.default_rng(1)
    encode(video, (rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(400)),
           320, 240, fps=25)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime")])}
    command = [sys.executable, "-m", "gradvis_export.apps.cli", "explain", str(video),
               *model_args(workdir), "--out", str(out / "a.mp4"), "--quiet"]  # fmt: skip
    child = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / ".a.mp4.part").exists():
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert left and set(left) <= {".a.mp4.part", ".a.json.part"}, left
    argv = ["explain", str(workdir / "in.mp4"), *model_args(workdir), "--out",
            str(out / "a.mp4"), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.mp4"]


# ----------------------------------------------------------------------------- export


def test_export_read_only_and_disk_full(workdir, disk, capsys):
    argv = ["export", *model_args(workdir), "--out", str(disk / "e.onnx"), "--quiet"]
    before = older(disk, "e.onnx")
    fill(disk)
    assert_one_line(*run(argv, capsys), "e.onnx", "no space left", "kept")
    assert contents(disk) == before
    assert [p.name for p in disk.iterdir() if p.name.startswith(".")] == []
    read_only(disk)
    assert_one_line(*run(argv, capsys), "read-only", "e.onnx")
    assert contents(disk) == before


def test_export_to_a_folder_and_stale_temporary_files(workdir, tmp_path, capsys):
    (tmp_path / "e.onnx").mkdir()
    argv = ["export", *model_args(workdir), "--quiet"]
    assert_one_line(*run([*argv, "--out", str(tmp_path / "e.onnx")], capsys), "is a folder")
    stale = tmp_path / ".f.onnx.0123abcd.tmp.onnx"  # what a SIGKILLed export leaves
    stale.write_bytes(b"")
    code, err = run([*argv, "--out", str(tmp_path / "f.onnx")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx", "f.onnx"]


# ----------------------------------------------------------------------------- triton-repo


@pytest.fixture(scope="module")
def artifact(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "tiny.onnx"
    assert cli.main(["export", *model_args(workdir), "--out", str(out), "--quiet"]) == 0
    return out


def test_triton_repo_disk_full_read_only_and_a_file_in_the_way(artifact, disk, tmp_path, capsys):
    repo = disk / "repo"
    assert cli.main(["triton-repo", "--artifact", str(artifact), "--out", str(repo)]) == 0
    capsys.readouterr()
    model = repo / "tiny"
    kept = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    fill(disk)
    argv = ["triton-repo", "--artifact", str(artifact), "--out", str(repo), "--force"]
    assert_one_line(*run(argv, capsys), "tiny", "no space left", "kept")
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # no staging folder left
    assert {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()} == kept
    read_only(disk)
    assert_one_line(*run(argv, capsys), "read-only")
    (tmp_path / "file").write_bytes(b"")
    argv = ["triton-repo", "--artifact", str(artifact), "--out", str(tmp_path / "file")]
    assert_one_line(*run(argv, capsys), "is a file")


def test_triton_repo_recovers_the_older_model_a_killed_swap_left(artifact, tmp_path):
    """Killed between its two renames: the older model folder is `.NAME.old`, NAME missing;
    the next run puts it back before deciding anything."""
    repo = tmp_path / "repo"
    assert cli.main(["triton-repo", "--artifact", str(artifact), "--out", str(repo)]) == 0
    os.replace(repo / "tiny", repo / ".tiny.old")
    (repo / ".tiny.part").mkdir()
    assert cli.main(["triton-repo", "--artifact", str(artifact), "--out", str(repo)]) == 2
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # recovered: exists, no --force


# ----------------------------------------------------------------------------- train


def test_train_refuses_a_read_only_folder_before_training(disk, capsys):
    read_only(disk)
    code = train.main(["--out", str(disk / "m.pt"), "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "read-only" in err[0], err


def test_train_checkpoint_disk_full_keeps_the_older_one(disk):
    before = older(disk, "m.pt")
    fill(disk)
    state = {"w": torch.zeros(20_000)}
    with pytest.raises(OutputError, match="no space left") as caught:
        train.save_checkpoint(disk / "m.pt", state)
    assert "\n" not in str(caught.value)
    assert contents(disk) == before
    (disk / "filler").unlink()
    (disk / ".m.pt.part").write_bytes(b"")  # a killed run's
    train.save_checkpoint(disk / "m.pt", state)
    assert torch.load(disk / "m.pt")["w"].shape == (20_000,)
    assert sorted(p.name for p in disk.iterdir()) == ["m.pt"]


# ----------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, ["no space left", "free some space"]),
        (errno.EDQUOT, ["quota"]),
        (errno.EROFS, ["read-only", "writable folder"]),
        (errno.EACCES, ["permission denied"]),
    ],
)
def test_output_error_names_the_output_not_the_temporary_file(tmp_path, code, words):
    error = output_error(OSError(code, os.strerror(code)), tmp_path / ".a.json.part")
    text = str(error)
    assert text.startswith(f"cannot write {str(tmp_path / 'a.json')!r}: ")
    assert ".part" not in text and "\n" not in text
    for word in words:
        assert word in text
    assert json.dumps(text)  # plain text, fit for the batch manifest
