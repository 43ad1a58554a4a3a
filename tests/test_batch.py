"""`gradvis batch`: many videos through one artifact, in a local process pool and on Ray.

Six generated videos (24 frames, 160x96) and one corrupt file go through a small uint8 X3D-XS
Grad-CAM artifact (exported once for the module).  The reference for every output is the
single-video job `explain_video` run directly in this process; the number of clips per video
is counted here from the clip rule (windows of 4 frames every 2).  Ray runs in this process
(`ray.init(num_cpus=2)`), the interrupted run in a child process killed mid-batch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]

from videos import decode, encode

import gradvis_export as gv
from gradvis_export.apps import batch, cli, models
from gradvis_export.apps.video.backends import ArtifactBackend
from gradvis_export.apps.video.pipeline import VideoOptions, explain_video
from gradvis_export.core.preprocess import UInt8Input
from gradvis_export.errors import GradvisError

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

FRAMES, WIDTH, HEIGHT, CLIP_LEN, SIZE = 24, 160, 96, 4, 32
GOOD = [f"v{k}" for k in range(6)]


def write_video(path: Path, seed: int) -> Path:
    """A gradient background and a bright block that moves; different per seed."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]

    def frame(i: int) -> np.ndarray:
        image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        image[..., 0] = (xx * 255 // (WIDTH - 1) + 37 * seed) % 256
        image[..., 1] = (yy * 255 // (HEIGHT - 1) + 11 * i) % 256
        image[..., 2] = (30 * seed + 5 * i) % 256
        left = (20 + 4 * i + 17 * seed) % (WIDTH - 16)
        image[30:60, left : left + 16] = 255
        return image

    return encode(path, (frame(i) for i in range(FRAMES)), WIDTH, HEIGHT, fps=24)


def clip_count(frames: int, clip_len: int, stride: int) -> int:
    """Windows start at 0, stride, ... while a whole clip fits, plus one end-aligned window
    if frames are left uncovered."""
    starts = list(range(0, frames - clip_len + 1, stride))
    return len(starts) + (starts[-1] + clip_len < frames)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = models.build("x3d_xs", num_classes=3, clip_len=CLIP_LEN, size=SIZE)
    explainer = UInt8Input(gv.GradCAM(model, "blocks.4"))
    example = torch.randint(0, 256, (2, CLIP_LEN, SIZE, SIZE, 3), dtype=torch.uint8)
    return gv.export(explainer, example, tmp_path_factory.mktemp("artifact") / "tiny.onnx")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for k, name in enumerate(GOOD):
        write_video(folder / f"{name}.mp4", seed=k)
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))  # not a video
    return folder


@pytest.fixture(scope="module")
def reference(artifact, videos, tmp_path_factory) -> Path:
    """Each good video through explain_video directly (the single-video job, one thread)."""
    out = tmp_path_factory.mktemp("reference")
    backend = ArtifactBackend(artifact, threads=1)
    options = VideoOptions(clip_len=CLIP_LEN, stride=CLIP_LEN // 2, size=SIZE, uint8_input=True)
    for name in GOOD:
        explain_video(
            videos / f"{name}.mp4",
            backend,
            options,
            out=out / f"{name}.mp4",
            sidecar=out / f"{name}.json",
            progress=False,
            metadata={"method": "gradcam", "artifact": str(artifact)},
        )
    return out


@pytest.fixture(scope="module")
def local_run(artifact, videos, tmp_path_factory):
    """The batch on one machine through the CLI: (out folder, exit code, stderr)."""
    out = tmp_path_factory.mktemp("local") / "results"
    code = cli.main(
        ["batch", "--input", str(videos), "--artifact", str(artifact), "--out", str(out)]
    )
    return out, code


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def assert_same_outputs(out: Path, want: Path, videos: Path) -> None:
    """The sidecars (per frame: class, score, boxes of the averaged map) equal; the overlay
    videos decode to the same frames up to H.264 noise.  The overlays are compared within
    a tolerance because x264 here does not give identical bytes for identical frames (a
    mean difference of ~2 levels, measured by re-encoding the same frames; reported), which
    is far below the overlay's own effect (~20 levels from the input frames)."""
    for name in GOOD:
        got_json = json.loads((out / f"{name}.json").read_text())
        assert got_json == json.loads((want / f"{name}.json").read_text()), name
        got, ref = decode(out / f"{name}.mp4"), decode(want / f"{name}.mp4")
        assert got.shape == ref.shape == (FRAMES, HEIGHT, WIDTH, 3)
        effect = mean_difference(ref, decode(videos / f"{name}.mp4"))
        assert effect > 10, f"{name}: the overlay barely changes the frames"
        assert mean_difference(got, ref) < min(4.0, effect / 5), name


def test_local_batch_equals_the_single_video_job(local_run, reference, videos):
    out, code = local_run
    assert code == 1  # one video failed: non-zero, but every other video was explained
    assert_same_outputs(out, reference, videos)
    sidecar = json.loads((out / "v0.json").read_text())
    assert len(sidecar["frames"]) == FRAMES
    assert len(sidecar["clips"]) == clip_count(FRAMES, CLIP_LEN, CLIP_LEN // 2)
    assert decode(out / "v0.mp4").shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert any(frame["boxes"] for frame in sidecar["frames"])  # the maps are not all zero


def test_manifest_lists_every_video_and_the_failure(local_run, videos):
    out, _ = local_run
    records = manifest(out)
    assert sorted(r["key"] for r in records) == sorted([*GOOD, "broken"])
    by_key = {r["key"]: r for r in records}
    for name in GOOD:
        r = by_key[name]
        assert r["status"] == "ok" and r["video"] == str(videos / f"{name}.mp4")
        assert r["frames"] == FRAMES
        assert r["clips"] == clip_count(FRAMES, CLIP_LEN, CLIP_LEN // 2)
        assert r["outputs"] == [str(out / f"{name}.mp4"), str(out / f"{name}.json")]
        assert int(r["worker"].rsplit(":", 1)[1]) != os.getpid()  # ran in a pool process
    failed = by_key["broken"]
    assert failed["status"] == "failed"
    assert "broken.mp4" in failed["error"] and "\n" not in failed["error"]
    assert not (out / "broken.mp4").exists() and not (out / "broken.json").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_ray_batch_equals_the_local_batch(artifact, videos, local_run, reference, tmp_path):
    import ray

    local_out, _ = local_run
    out = tmp_path / "ray"
    path = os.pathsep.join([str(ROOT), str(ROOT / "runtime")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        code = cli.main(
            ["batch", "--input", str(videos), "--artifact", str(artifact), "--out", str(out),
             "--ray", "auto", "--quiet"]
        )  # fmt: skip
        assert ray.is_initialized()  # the batch joined this instance and left it running
        # a node without the artifact's path: the worker takes the object store's copy
        shipped = [batch.file_digest(artifact), ray.put(artifact.read_bytes())]
        options = VideoOptions(clip_len=CLIP_LEN, stride=CLIP_LEN // 2, size=SIZE, uint8_input=True)
        metadata = {"method": "gradcam", "artifact": str(artifact)}
        worker = batch.RayVideoWorker(
            str(tmp_path / "elsewhere.onnx"), shipped, 1, options, metadata
        )
        job = batch.Job(str(videos / "v0.mp4"), "v0", None, str(tmp_path / "v0.json"), "-")
        assert worker.explain(job)["status"] == "ok"
        copy = Path(tempfile.gettempdir()) / "gradvis-artifacts" / shipped[0]
        assert (copy / "elsewhere.onnx").read_bytes() == artifact.read_bytes()
        shutil.rmtree(copy)
    finally:
        ray.shutdown()
    assert code == 1
    for name in GOOD:  # byte for byte the same sidecars as the local pool
        assert (out / f"{name}.json").read_bytes() == (local_out / f"{name}.json").read_bytes()
    assert_same_outputs(out, reference, videos)
    records = {r["key"]: r for r in manifest(out)}
    assert {r["runner"] for r in records.values()} == {"ray"}
    assert [k for k, r in records.items() if r["status"] == "failed"] == ["broken"]
    assert len({r["worker"] for r in records.values()}) == 2  # two actors shared the work
    want = json.loads((reference / "v0.json").read_text())
    assert json.loads((tmp_path / "v0.json").read_text()) == want


def test_rerun_skips_complete_videos_and_retries_failed(artifact, videos, local_run):
    out, _ = local_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("v*")}
    settings = batch.BatchSettings(artifact=artifact, out_dir=out)
    report = batch.run_batch(str(videos), settings)
    assert (report.total, report.skipped, report.ok, report.failed) == (7, 6, 0, 1)
    assert [r["key"] for r in report.records] == ["broken"]  # only the failed one ran again
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("v*")} == stamps
    # one batch per output folder at a time
    other = batch.Manifest(out / batch.MANIFEST)
    other.open()
    try:
        with pytest.raises(GradvisError, match="another gradvis batch"):
            batch.run_batch(str(videos), settings)
    finally:
        other.close()
    assert len(manifest(out)) == 8  # 7 of the first run + the retried failure


def test_killed_run_resumes_without_partial_files(artifact, videos, reference, tmp_path):
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "gradvis_export.apps.cli", "batch", "--input", str(videos),
        "--artifact", str(artifact), "--out", str(out), "--workers", "1", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime")])}
    child = subprocess.Popen(
        command, env=env, start_new_session=True, stderr=subprocess.DEVNULL, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            lines = (
                (out / "manifest.jsonl").read_text() if (out / "manifest.jsonl").exists() else ""
            )
            if lines.count("\n") >= 2:  # two videos finished: kill the pool mid-batch
                os.killpg(child.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    before = [r for r in manifest(out) if r["status"] == "ok"]
    assert 1 <= len(before) < 6
    for p in out.glob("*.mp4"):  # whatever exists is whole (renamed only when complete)
        assert decode(p).shape == (FRAMES, HEIGHT, WIDTH, 3)
    report = batch.run_batch(str(videos), batch.BatchSettings(artifact=artifact, out_dir=out))
    assert report.skipped == len(before)
    assert (report.ok, report.failed) == (6 - len(before), 1)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert_same_outputs(out, reference, videos)
    # a temporary file a killed run left is removed; other options are other outputs
    (out / ".v0.mp4.part").write_bytes(b"left by a killed run")
    settings = batch.BatchSettings(artifact=artifact, out_dir=out, alpha=0.3)
    report = batch.run_batch(str(videos / "v0.mp4"), settings)
    assert (report.total, report.skipped, report.ok) == (1, 0, 1)
    assert not (out / ".v0.mp4.part").exists()
    assert mean_difference(decode(out / "v0.mp4"), decode(reference / "v0.mp4")) > 4.0


def test_json_only_from_a_list_with_a_limit(artifact, videos, reference, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(
        f"{videos / 'v3.mp4'}\n# skipped line\n{videos / 'v1.mp4'}\n{videos / 'v2.mp4'}\n"
    )
    out = tmp_path / "out"
    code = cli.main(
        ["batch", "--input", str(listing), "--artifact", str(artifact), "--out", str(out),
         "--json-only", "--limit", "2", "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "v1.json", "v3.json"]
    for name in ("v1", "v3"):
        assert json.loads((out / f"{name}.json").read_text()) == json.loads(
            (reference / f"{name}.json").read_text()
        )


def test_find_videos_folder_list_glob_and_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/x.mp4", "b/x.mp4", "a/y.avi", "a/notes.txt", "a/.hidden.mp4"):
        (tmp_path / p).write_bytes(b"")
    out = tmp_path / "a" / "out"
    out.mkdir()
    (out / "x.mp4").write_bytes(b"")  # an output of an earlier run is no input
    found = batch.find_videos(tmp_path, exclude=out)
    assert found == [tmp_path / "a/x.mp4", tmp_path / "a/y.avi", tmp_path / "b/x.mp4"]
    keys = batch.output_keys(found)
    assert len(set(keys)) == 3 and keys[1] == "y" and keys[0].startswith("x-")
    listing = tmp_path / "list.txt"
    listing.write_text("# two videos, in this order\nb/x.mp4\n\na/y.avi\n")
    assert batch.find_videos(listing) == [tmp_path / "b/x.mp4", tmp_path / "a/y.avi"]
    assert batch.find_videos(str(tmp_path / "*" / "*.avi")) == [tmp_path / "a/y.avi"]


def test_cli_batch_errors_are_one_line(artifact, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "v.mp4").write_bytes(b"")
    cases = [
        ["--input", str(empty), "--artifact", str(artifact), "--out", str(tmp_path / "o")],
        ["--input", str(tmp_path / "nothing*.mp4"), "--artifact", str(artifact), "--out",
         str(tmp_path / "o")],
        ["--input", str(tmp_path / "v.mp4"), "--artifact", str(tmp_path / "no.onnx"), "--out",
         str(tmp_path / "o")],
    ]  # fmt: skip
    for args in cases:
        assert cli.main(["batch", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gradvis: error: "), err
    assert not (tmp_path / "o").exists()


def test_batch_takes_an_image_artifact_and_explains_every_frame(videos, tmp_path):
    """An image artifact (B, S, S, 3) uint8: every frame of every video explained, the same
    JSON as the single-video job (per frame, batches of --batch frames)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()  # fmt: skip
    example = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    path = gv.export(UInt8Input(gv.GradCAM(model, "1")), example, tmp_path / "image.onnx")
    out = tmp_path / "results"
    argv = ["batch", "--input", str(videos / "v0.mp4"), "--artifact", str(path), "--out",
            str(out), "--batch", "5", "--json-only", "--workers", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    got = json.loads((out / "v0.json").read_text())
    options = VideoOptions(clip_len=5, stride=5, size=SIZE, per_frame=True, uint8_input=True)
    explain_video(videos / "v0.mp4", ArtifactBackend(path, threads=1), options,
                  sidecar=tmp_path / "want.json", progress=False)  # fmt: skip
    want = json.loads((tmp_path / "want.json").read_text())
    assert got["per_frame"] is True and got["batch"] == 5
    assert len(got["frames"]) == FRAMES
    assert [f["class"] for f in got["frames"]] == [f["class"] for f in want["frames"]]
    for a, b in zip(got["frames"], want["frames"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["boxes"] == b["boxes"]
    assert cli.main([*argv[:-2], "--stride", "2"]) == 2  # clips only
