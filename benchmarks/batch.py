"""Videos per hour of `gradvis batch`: the local process pool against Ray, on the same videos.

Generates short car-light videos (8 x 4 s, 320x180, 30 fps by default), exports the shipped
car-light explainer with uint8 input (or takes --artifact), and runs the batch four times into
fresh output folders, side by side in one process:

    local 1x1   one pool process, one thread      (the per-core baseline)
    local 2x1   two pool processes, one thread each (the default on 2 cores)
    ray   2x1   two Ray actors, one CPU each, on a local Ray instance (ray.init(num_cpus=2))

    python benchmarks/batch.py                       # ~2 minutes
    python benchmarks/batch.py --videos 16 --seconds 8

Each run's wall time includes starting its workers and loading the artifact in each; "steady"
excludes that start-up (the time from the batch's start to the first finished video, minus
that video's own time).  The scaling estimate for N workers is printed with its assumptions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime"), str(Path(__file__).resolve().parent)]

from video import make_video  # noqa: E402 - benchmarks/video.py's generated road scene


def run(label: str, videos: Path, artifact: Path, out: Path, **settings) -> dict:
    from gradvis_export.apps.batch import BatchSettings, run_batch

    finished: list[float] = []
    start = time.perf_counter()
    report = run_batch(
        str(videos),
        BatchSettings(artifact=artifact, out_dir=out, **settings),
        log=lambda _line: finished.append(time.perf_counter() - start),
    )
    assert report.failed == 0 and report.ok == report.total, report.records
    per_video = [float(r["seconds"]) for r in report.records]
    startup = finished[0] - per_video[0]
    return {
        "label": label,
        "workers": report.workers,
        "threads": report.threads,
        "videos": report.ok,
        "wall": report.seconds,
        "startup": startup,
        "per_video": statistics.median(per_video),
        "per_hour": report.ok * 3600 / report.seconds,
        "steady_per_hour": report.ok * 3600 / max(report.seconds - startup, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--artifact", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from gradvis_export.apps import cli

    with tempfile.TemporaryDirectory(prefix="gradvis-batch-bench-") as tmp:
        tmp = Path(tmp)
        artifact = args.artifact
        if artifact is None:
            artifact = tmp / "carlights_u8.onnx"
            assert cli.main(["export", "--uint8", "--out", str(artifact)]) == 0
        videos = tmp / "videos"
        videos.mkdir()
        for k in range(args.videos):
            make_video(videos / f"road{k:02d}.mp4", args.seconds, 320, 180)
        in_mb = sum(p.stat().st_size for p in videos.iterdir()) / 1e6 / args.videos
        load = os.getloadavg()[0]

        rows = [
            run("local 1x1", videos, artifact, tmp / "l1", workers=1, threads=1),
            run("local 2x1", videos, artifact, tmp / "l2", workers=2, threads=1),
        ]
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - t0
        try:
            rows.append(
                run("ray   2x1", videos, artifact, tmp / "r2", ray="auto", workers=2, threads=1)
            )
        finally:
            ray.shutdown()
        out_mb = sum(p.stat().st_size for p in (tmp / "l2").glob("road*")) / 1e6 / args.videos

    frames = int(args.seconds * 30)
    print(
        f"gradvis batch: {args.videos} videos x {args.seconds:g} s (320x180, 30 fps, {frames} "
        f"frames), shipped car-light X3D-XS Grad-CAM (ONNX, uint8 input), MP4 + JSON outputs; "
        f"{os.cpu_count()} CPUs, load {load:.2f} before the runs"
    )
    print(
        f"{'runner':10} {'workers':>7} {'wall s':>7} {'start s':>8} {'s/video':>8} "
        f"{'videos/h':>9} {'steady/h':>9}"
    )
    for r in rows:
        print(
            f"{r['label']:10} {r['workers']:>3} x {r['threads']:<1} {r['wall']:7.1f} "
            f"{r['startup']:8.1f} {r['per_video']:8.2f} {r['per_hour']:9.0f} "
            f"{r['steady_per_hour']:9.0f}"
        )
    print(f"(ray.init of the local instance: {ray_init:.1f} s, not in the ray row's wall time)")

    one, two, ray_row = rows
    local_rate = two["steady_per_hour"] / two["workers"]  # per worker, every core busy
    ray_rate = ray_row["steady_per_hour"] / ray_row["workers"]
    print(
        f"\nscaling estimate, N workers with a core each: videos/h(N) = N x the steady rate per "
        f"worker with every core busy\n  (local 2x1: {local_rate:.0f}/h = one video per "
        f"{3600 / local_rate:.2f} s; ray 2x1: {ray_rate:.0f}/h); 1 worker alone: "
        f"{one['steady_per_hour']:.0f}/h (its decode and render threads borrow the idle core)"
    )
    print(
        f"  shared storage: {in_mb:.2f} MB read + {out_mb:.2f} MB written per video "
        f"(these generated videos compress to almost nothing)"
    )
    print(f"  {'N':>5} {'local videos/h':>15} {'ray videos/h':>13} {'storage MB/s':>13}")
    for n in (2, 8, 32, 128):
        mbps = n * local_rate * (in_mb + out_mb) / 3600
        print(f"  {n:5} {n * local_rate:15.0f} {n * ray_rate:13.0f} {mbps:13.2f}")
    print(
        "  assumes: each worker owns a core (the job's own decode/render threads share it), "
        "videos like these\n  (longer ones amortise start-up further), start-up paid once per "
        "worker, storage and the driver\n  (one manifest line per video; Ray schedules one task "
        "per video) keep up."
    )


if __name__ == "__main__":
    main()
