"""`gradvis batch` leaves no orphans and no unrecorded output, and stops on a write failure.

The batch runs in a child process of its own session; SIGKILL of that process alone (not its
group: what an OOM killer or `kill -9` of the parent does) must take its workers and
multiprocessing's resource tracker with it within 5 s, and every output file on disk must
have its "ok" record in the manifest (the parent records a video before renaming its staged
files into place).  A tiny image artifact (two convolutions, uint8 in) and small generated
videos keep it quick.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]

from videos import encode

import gradvis_export as gv
from gradvis_export.apps import batch, cli
from gradvis_export.core.preprocess import UInt8Input

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SIZE, WIDTH, HEIGHT = 16, 96, 64


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()  # fmt: skip
    example = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    folder = tmp_path_factory.mktemp("artifact")
    return gv.export(UInt8Input(gv.GradCAM(model, "1")), example, folder / "image.onnx")


def write_videos(folder: Path, count: int, frames: int) -> Path:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        images = (rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(frames))
        encode(folder / f"v{k}.mp4", images, WIDTH, HEIGHT, fps=25)
    return folder


def manifest(out: Path) -> list[dict]:
    path = out / batch.MANIFEST
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short by the kill
    return records


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found.append(int(entry.name))
    return found


def outputs_on_disk(out: Path) -> set[str]:
    return {
        str(p) for p in out.iterdir() if not p.name.startswith(".") and p.name != "manifest.jsonl"
    }


def recorded_outputs(out: Path) -> set[str]:
    latest = {r["key"]: r for r in manifest(out)}
    return {p for r in latest.values() if r["status"] == "ok" for p in r["outputs"]}


def test_sigkill_of_the_parent_leaves_no_worker_and_no_unrecorded_output(artifact, tmp_path):
    videos = write_videos(tmp_path / "videos", 6, 150)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "gradvis_export.apps.cli", "batch", "--input", str(videos),
        "--artifact", str(artifact), "--out", str(out), "--workers", "2", "--threads", "1",
        "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime")])}
    child = subprocess.Popen(
        command, env=env, start_new_session=True, stderr=subprocess.DEVNULL, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if manifest(out) and len(session_processes(child.pid)) >= 3:  # workers at work
                break
            time.sleep(0.01)
        assert child.poll() is None, "the batch ended before it could be killed"
        workers = [pid for pid in session_processes(child.pid) if pid != child.pid]
        assert workers
        child.send_signal(signal.SIGKILL)  # the parent only, not its process group
        child.wait()
        killed = time.monotonic()
        while session_processes(child.pid) and time.monotonic() < killed + 5:
            time.sleep(0.05)
        left = session_processes(child.pid)
        stopped = time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()
        for pid in session_processes(child.pid):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"still alive 5 s after the parent's SIGKILL: {left}"
    print(f"workers gone {stopped:.2f} s after the parent's SIGKILL")
    time.sleep(1.0)  # nothing may appear afterwards either
    # every output on disk has its ok record; a record's outputs are on disk, or staged
    # whole and renamed by the next run (killed between recording and renaming)
    assert outputs_on_disk(out) <= recorded_outputs(out)
    recorded = [r for r in manifest(out) if r["status"] == "ok"]
    assert 1 <= len(recorded) < 6
    report = batch.run_batch(str(videos), batch.BatchSettings(artifact=artifact, out_dir=out))
    assert report.skipped == len(recorded)  # the manifest was the truth
    assert (report.ok, report.failed) == (6 - len(recorded), 0)
    assert outputs_on_disk(out) == recorded_outputs(out)
    assert len(outputs_on_disk(out)) == 12
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_unrecorded_staged_outputs_are_discarded_and_recorded_ones_published(artifact, tmp_path):
    """What a kill leaves: a worker's staged files the parent never recorded are removed on
    the next run; staged files of a recorded video (killed between the manifest line and the
    renames) are renamed into place, not explained again."""
    videos = write_videos(tmp_path / "videos", 2, 10)
    out = tmp_path / "out"
    settings = batch.BatchSettings(artifact=artifact, out_dir=out, json_only=True, workers=1)
    report = batch.run_batch(str(videos), settings)
    assert report.ok == 2
    jobs = {job.key: job for job in _plan(videos, settings)}
    # v0: recorded, then "killed" before the rename; v1: finished but never recorded
    for key in ("v0", "v1"):
        os.replace(jobs[key].sidecar, jobs[key].written[0])
    lines = (out / batch.MANIFEST).read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["key"] != "v1"]
    (out / batch.MANIFEST).write_text("\n".join(kept) + "\n")
    report = batch.run_batch(str(videos), settings)
    assert (report.skipped, report.ok) == (1, 1)  # v0 published, v1 explained again
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "v0.json", "v1.json"]


def _plan(videos: Path, settings: batch.BatchSettings) -> list[batch.Job]:
    import gradvis_runtime

    spec = gradvis_runtime.load(settings.artifact).spec
    options = batch.video_options(spec, settings)
    found = batch.find_videos(videos, exclude=settings.out_dir)
    return batch.plan(found, settings, options, batch.file_digest(settings.artifact))


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(folder)], capture_output=True
    )
    if os.geteuid() != 0 or done.returncode != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "cannot mount a tmpfs here (needs root and mount rights; CI has both, so there it fails)"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_batch_disk_full_and_read_only_are_one_line(artifact, tmp_path, disk, capsys):
    """A full disk stops the batch with one line (every later video would fail the same
    way); what is on disk is what the manifest records.  A read-only folder: one line before
    any video runs."""
    videos = write_videos(tmp_path / "videos", 4, 60)
    out = disk / "out"
    argv = ["batch", "--input", str(videos), "--artifact", str(artifact), "--out", str(out),
            "--workers", "1", "--quiet"]  # fmt: skip
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("gradvis: error: cannot write "), err
    assert "no space left" in err[0] and ".staged" not in err[0] and ".part" not in err[0]
    assert outputs_on_disk(out) == recorded_outputs(out)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "read-only" in err[0], err
