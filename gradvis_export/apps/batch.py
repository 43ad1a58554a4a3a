"""Explain many videos with one exported artifact: a process pool here, or actors on Ray.

Each video is one job (`explain_video` with the artifact's backend); each worker process loads
the artifact once and keeps it.  A local worker writes a video's outputs under hidden staged
names (`.KEY.staged.mp4`, themselves written as `.part` files and renamed when whole); the
parent process appends one JSON line per finished video to `OUT/manifest.jsonl` -- the only
file several jobs share -- and only then renames the staged files into place, so every output
on disk has its record (the manifest is the truth).  Workers die with the parent (Linux's
parent-death signal, and a thread watching the parent's pid elsewhere): a SIGKILLed batch
leaves no process behind and nothing unrecorded, only hidden files the next run removes.
A write failure (disk full, a read-only folder) stops the batch with one line.  A rerun skips a video
whose last manifest record says "ok" for the same artifact, options and input file and whose
outputs exist; everything else runs again.  A video that fails is a "failed" record with its
one-line error; the batch goes on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from gradvis_export.apps.outputs import remove_stale, staged, staged_glob, temporary, writing
from gradvis_export.apps.video.worker import cpu_count
from gradvis_export.errors import GradvisError, InputError, OutputError
from gradvis_runtime.contract import ArtifactSpec

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts"}
MANIFEST = "manifest.jsonl"
#: a job whose worker died this many times (a crash, not an error the job raised) is failed
MAX_WORKER_DEATHS = 2


@dataclass(frozen=True)
class Job:
    """One video and where its outputs go (absolute paths: workers may run elsewhere)."""

    video: str
    key: str  # the output stem, unique within the batch
    mp4: str | None
    sidecar: str
    fingerprint: str  # artifact + options + input file: a skip needs the same
    # the worker writes staged names and the parent renames them after recording the video
    # (False: the worker writes the outputs themselves, e.g. a Ray actor called directly)
    stage: bool = False

    @property
    def outputs(self) -> list[str]:
        return [p for p in (self.mp4, self.sidecar) if p is not None]

    @property
    def written(self) -> list[str]:
        """Where the worker writes the outputs (staged names, or the outputs themselves)."""
        return [str(staged(p, self.tag)) if self.stage else p for p in self.outputs]

    @property
    def tag(self) -> str:
        """Marks this run's staged files (the fingerprint: the same artifact, options, input)."""
        return self.fingerprint[:12]


@dataclass
class BatchSettings:
    artifact: Path
    out_dir: Path
    stride: int | None = None
    target: int = -1
    alpha: float = 0.5
    boxes: bool = False
    json_only: bool = False  # sidecars only, no overlay MP4
    workers: int | None = None  # processes (local) or actors (Ray); default: fill the CPUs
    threads: int | None = None  # intra-op threads per worker; default: cores / workers
    ray: str | None = None  # a Ray address ("auto", "ray://host:10001", "local"), or None
    limit: int | None = None  # only the first N videos of the input
    batch: int = 8  # an image artifact: frames per call
    resize: str = "crop"  # crop | pad | squash (apps/video/framing.py)
    label: bool = True  # draw the predicted label and score on the frames


@dataclass
class BatchReport:
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    workers: int = 0
    threads: int = 0
    runner: str = "local"
    seconds: float = 0.0
    records: list[dict[str, object]] = field(default_factory=list)  # this run's, in finish order


# ----------------------------------------------------------------------------- inputs


def find_videos(spec: str | os.PathLike, exclude: Path | None = None) -> list[Path]:
    """The videos `spec` names: a folder (video files under it, sorted), a glob pattern, a
    .txt list (one path a line, relative to the list's folder, # comments), or one file.
    Files under `exclude` (the output folder) are never inputs."""
    text = str(spec)
    path = Path(text).expanduser()
    listed = False  # a list keeps its order; folders and patterns are sorted
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES]
        what = f"the folder {text!r} has no video files ({', '.join(sorted(VIDEO_SUFFIXES))})"
    elif path.suffix.lower() == ".txt" and path.is_file():
        listed = True
        found = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(path.parent / Path(line).expanduser())
        what = f"the list {text!r} names no videos"
    elif any(c in text for c in "*?["):
        found = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        found = [p for p in found if p.is_file()]
        what = f"the pattern {text!r} matches no files"
    elif path.is_file():
        found, what = [path], ""
    else:
        raise InputError(
            f"--input {text!r} is not a folder, a glob pattern, a .txt list or a video file"
        )
    excluded = exclude.resolve() if exclude is not None else None
    videos: list[Path] = []
    for p in found:
        p = p.absolute()
        if p.name.startswith(".") or (excluded and p.resolve().is_relative_to(excluded)):
            continue  # hidden files (our own .part files) and the outputs
        if p not in videos:
            videos.append(p)
    if not videos:
        raise InputError(what or f"--input {text!r} names no videos")
    return videos if listed else sorted(videos)


def output_keys(videos: list[Path]) -> list[str]:
    """A unique output stem per video: its name, or name + a hash of its path when two
    videos share a name."""
    counts = Counter(v.stem for v in videos)
    keys = []
    for v in videos:
        key = v.stem
        if counts[key] > 1:
            key += "-" + hashlib.sha1(str(v).encode()).hexdigest()[:8]
        keys.append(key)
    return keys


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _video_stamp(video: Path) -> str:
    try:
        st = video.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


# ----------------------------------------------------------------------------- manifest


class Manifest:
    """`OUT/manifest.jsonl`: one JSON record per finished video, appended by the parent only.

    A record is written with one `write` of a whole line on an O_APPEND descriptor, then
    fsynced; a line cut short by a crash is ignored on reading (and the next append starts on
    a new line).  The last record of a key is that video's state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> dict[str, dict[str, object]]:
        latest: dict[str, dict[str, object]] = {}
        if not self.path.is_file():
            return latest
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a killed run
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    latest[record["key"]] = record
        return latest

    def open(self) -> None:
        """Open for appending and take an exclusive lock: one batch per output folder at a
        time (a second one would redo the first one's videos and interleave records)."""
        import fcntl

        with writing(self.path):  # a read-only or forbidden folder: one line
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise GradvisError(
                f"another gradvis batch is writing to {str(self.path.parent)!r}; wait for it, "
                "or give another --out"
            ) from None
        if os.fstat(self._fd).st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short: start the next on a new line
                    with writing(self.path):
                        os.write(self._fd, b"\n")

    def append(self, record: dict[str, object]) -> None:
        if self._fd is None:
            self.open()
        line = (json.dumps(record) + "\n").encode()
        with writing(self.path):  # disk full: one line; a short write is a cut line (ignored)
            if os.write(self._fd, line) != len(line):
                raise OSError(28, "No space left on device (a short write)")
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_complete(job: Job, record: dict[str, object] | None) -> bool:
    """Done before: an ok record for this artifact, these options and this input file, and
    every output on disk (outputs appear only by rename, so existing means whole)."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("fingerprint") == job.fingerprint
        and all(Path(p).is_file() for p in job.outputs)
    )


def partial_paths(job: Job) -> list[Path]:
    """The temporary names the video job writes under (`.NAME.part`, see
    video.pipeline.atomic_file) and the staged outputs of any run (`.KEY.staged-TAG.mp4`)
    with theirs; a killed run can leave them behind."""
    paths = []
    for p in job.outputs:
        paths.append(temporary(p))
        for found in Path(p).parent.glob(staged_glob(p)):
            paths += [found, temporary(found)]
        paths.append(temporary(staged(p, job.tag)))
    return paths


def publish(job: Job) -> None:
    """Rename a recorded job's staged outputs into place (a write failure: one line); an
    output already renamed (a run killed between the two renames) is left as it is."""
    if not job.stage:
        return
    for final, written in zip(job.outputs, job.written):
        if Path(written).is_file():
            with writing(final):
                os.replace(written, final)


def finish_publishing(job: Job, record: dict[str, object] | None) -> None:
    """A run killed after recording a video but before renaming its staged outputs: the
    record is the truth and the staged files (same tag, renamed there only when whole) are
    its outputs, so finish the renames."""
    if (
        record is not None
        and record.get("status") == "ok"
        and record.get("fingerprint") == job.fingerprint
        and job.stage
        and all(Path(f).is_file() or Path(w).is_file() for f, w in zip(job.outputs, job.written))
    ):
        publish(job)


def discard(job: Job) -> None:
    """Remove a job's staged outputs (its record says it failed, or none was written)."""
    if job.stage:
        for written in job.written:
            Path(written).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the worker side


class VideoWorker:
    """What a worker process holds: the loaded artifact and the video options."""

    def __init__(
        self, artifact: str, threads: int, options: object, metadata: dict[str, object]
    ) -> None:
        import torch

        from gradvis_export.apps.video.backends import ArtifactBackend

        torch.set_num_threads(threads)  # the job's own torch ops (resizing the maps)
        self.backend = ArtifactBackend(artifact, threads=threads)
        self.options = options
        self.metadata = metadata

    def explain(self, job: Job) -> dict[str, object]:
        """Run one job; any error becomes a failed record (the batch never stops)."""
        from gradvis_export.apps.video.pipeline import explain_video

        notes: list[str] = []
        record: dict[str, object] = {"key": job.key, "video": job.video}
        start = time.perf_counter()
        mp4, sidecar = (
            (str(staged(job.mp4, job.tag)) if job.mp4 else None, str(staged(job.sidecar, job.tag)))
            if job.stage
            else (job.mp4, job.sidecar)
        )
        try:
            summary = explain_video(
                job.video,
                self.backend,
                self.options,
                out=mp4,
                sidecar=sidecar,
                progress=False,
                warn=notes.append,
                metadata=self.metadata,
            )
        except Exception as error:
            record.update(status="failed", error=one_line(error))
            if isinstance(error, OutputError):  # disk full, read-only: the batch stops
                record["write_error"] = True
        else:
            record.update(
                status="ok", outputs=job.outputs, frames=summary.frames, clips=summary.clips
            )
            if notes:
                record["notes"] = notes
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["worker"] = f"{socket.gethostname()}:{os.getpid()}"
        return record


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text}"[:500]


_WORKER: VideoWorker | None = None
#: prctl(2)'s option: the signal the kernel sends this process when its parent dies
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, poll: float = 0.5) -> bool:
    """Make this worker process end when the batch's process `parent` dies, even by SIGKILL
    (which runs no cleanup code in the parent): Linux's parent-death signal (SIGKILL), and a
    daemon thread watching the parent's pid (other systems, and a parent already gone).
    Returns whether the parent-death signal is armed."""
    import ctypes
    import signal
    import threading

    armed = False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: no prctl
        pass
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)  # re-parented: the batch is gone, and nobody would record this work

    threading.Thread(target=watch, name="gradvis-parent-watch", daemon=True).start()
    return armed


def _init_process(
    artifact: str, threads: int, options: object, metadata: dict, parent: int | None = None
) -> None:
    global _WORKER
    if parent is not None:
        die_with_parent(parent)
    _WORKER = VideoWorker(artifact, threads, options, metadata)


def _explain_in_process(job: Job) -> dict[str, object]:
    assert _WORKER is not None, "the pool initializer did not run"
    return _WORKER.explain(job)


class RayVideoWorker(VideoWorker):
    """The Ray actor: the artifact is read from its path, or -- on a node without that path --
    from the copy the driver put in the object store (`shipped` = [sha256, ObjectRef of the
    bytes], in a list so Ray does not fetch the bytes unless they are needed), written once
    per node under the temporary folder, named by its digest."""

    def __init__(self, artifact: str, shipped: list, threads: int, options, metadata) -> None:
        if not Path(artifact).is_file():
            import tempfile

            import ray

            digest, ref = shipped
            local = Path(tempfile.gettempdir()) / "gradvis-artifacts" / digest / Path(artifact).name
            if not local.is_file():
                local.parent.mkdir(parents=True, exist_ok=True)
                part = local.with_name(f".{local.name}.{os.getpid()}.part")
                part.write_bytes(ray.get(ref))
                os.replace(part, local)  # several actors of a node may race: each renames whole
            artifact = str(local)
        super().__init__(artifact, threads, options, metadata)


# ----------------------------------------------------------------------------- runners

OnRecord = Callable[[Job, dict[str, object]], None]


def _failed(job: Job, error: str) -> dict[str, object]:
    return {"key": job.key, "video": job.video, "status": "failed", "error": error}


def run_local(jobs: list[Job], workers: int, threads: int, init_args: tuple, on_record: OnRecord):
    """A spawn-context process pool, at most 2 jobs per worker in flight.  If a worker process
    dies (a crash in a decoder, OOM), the pool is rebuilt and its in-flight jobs run again; a
    job in flight at MAX_WORKER_DEATHS deaths is failed."""
    pending = deque(jobs)
    deaths: Counter[str] = Counter()
    context = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state
    init_args = (*init_args, os.getpid())  # the workers end when this process does
    while pending:
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_process, initargs=init_args
        )
        in_flight: dict = {}
        try:
            broken = False
            while (pending and not broken) or in_flight:
                while pending and not broken and len(in_flight) < 2 * workers:
                    job = pending.popleft()
                    in_flight[pool.submit(_explain_in_process, job)] = job
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    job = in_flight.pop(future)
                    try:
                        record = future.result()
                    except BrokenProcessPool:
                        broken = True
                        deaths[job.key] += 1
                        if deaths[job.key] >= MAX_WORKER_DEATHS:
                            on_record(job, _failed(job, "the worker process died on it twice"))
                        else:
                            pending.appendleft(job)
                        continue
                    except Exception as error:
                        record = _failed(job, one_line(error))
                    on_record(job, record)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def run_ray(
    jobs: list[Job],
    address: str,
    workers: int | None,
    threads: int,
    init_args: tuple,
    on_record: OnRecord,
) -> int:
    """One actor per `threads` CPUs of the cluster (or `workers` actors), one job per actor at
    a time, results collected as they finish.  An actor that dies is replaced and its job runs
    again (failed at MAX_WORKER_DEATHS).  Uses the Ray instance this process already joined,
    else joins `address` ("local": a new instance here) and leaves it after.  Returns the
    number of actors."""
    try:
        import ray
    except ImportError as error:
        raise GradvisError(
            "--ray needs Ray: pip install 'gradvis[ray]' (or ray==2.60.0)"
        ) from error

    started = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise GradvisError(
                f"cannot reach a Ray cluster at {address!r} ({one_line(error)}); start one with "
                "`ray start --head`, or pass --ray local for a Ray instance on this machine"
            ) from None
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(len(jobs), workers or cpus // threads))
        artifact, _, options, metadata = init_args
        # for nodes without the artifact's path
        shipped = [file_digest(Path(artifact)), ray.put(Path(artifact).read_bytes())]
        actor_class = ray.remote(num_cpus=threads, max_restarts=0)(RayVideoWorker)

        def new_actor():
            return actor_class.remote(artifact, shipped, threads, options, metadata)

        idle = [new_actor() for _ in range(count)]
        pending = deque(jobs)
        deaths: Counter[str] = Counter()
        running: dict = {}
        try:
            while pending or running:
                while pending and idle:
                    actor, job = idle.pop(), pending.popleft()
                    running[actor.explain.remote(job)] = (job, actor)
                ready, _ = ray.wait(list(running), num_returns=1)
                job, actor = running.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except Exception as error:  # the actor died (jobs catch their own errors)
                    ray.kill(actor)
                    idle.append(new_actor())
                    deaths[job.key] += 1
                    if deaths[job.key] >= MAX_WORKER_DEATHS:
                        why = f"the Ray worker died on it twice ({one_line(error)})"
                        on_record(job, _failed(job, why))
                    else:
                        pending.appendleft(job)
                    continue
                idle.append(actor)
                on_record(job, record)
        finally:
            for actor in idle + [actor for _, actor in running.values()]:
                ray.kill(actor)
    finally:
        if started:
            ray.shutdown()
    return count


# ----------------------------------------------------------------------------- the batch


def video_options(spec: ArtifactSpec, settings: BatchSettings):
    """The video job's options from the artifact's contract (clip length, size, layout,
    normalisation, class names) and the batch's settings."""
    from gradvis_export.apps.video.pipeline import VideoOptions

    size = spec.frame_size
    if len(spec.data_inputs) > 1 or size is None or size[0] != size[1]:
        raise InputError(
            f"{str(settings.artifact)!r} takes input {tuple(spec.map_spec.shape)} "
            f"({spec.layout}); the batch explains videos, so it needs one square data input: "
            "a video artifact (B,T,S,S,3 uint8 or B,3,T,S,S) or an image artifact (B,S,S,3 "
            "uint8 or B,3,S,S)"
        )
    needs = [s.name for s in spec.target_inputs if s.default is None]
    if needs:
        raise InputError(
            f"{str(settings.artifact)!r} needs {', '.join(needs)} for every call (a detection "
            "target): the batch has no per-video boxes; use gradvis explain VIDEO --artifact "
            "... --box X1 Y1 X2 Y2 (or --targets FILE)"
        )
    per_frame = not spec.is_video
    pre = spec.preprocess
    if per_frame:
        if settings.stride is not None:
            raise InputError("--stride is for video artifacts: an image artifact sees each frame")
        if settings.batch < 1:
            raise InputError(f"--batch {settings.batch} must be at least 1")
        clip_len = stride = settings.batch
    else:
        clip_len = int(spec.clip_len)
        stride = settings.stride if settings.stride is not None else max(1, clip_len // 2)
        if stride < 1:
            raise InputError(f"--stride {stride} must be at least 1")
    return VideoOptions(
        clip_len=clip_len,
        stride=min(stride, clip_len),
        size=size[0],
        per_frame=per_frame,
        resize=settings.resize,
        label=settings.label,
        mean=pre.mean or (0.45, 0.45, 0.45),
        std=pre.std or (0.225, 0.225, 0.225),
        target=settings.target,
        alpha=settings.alpha,
        boxes=settings.boxes,
        uint8_input=spec.uint8,
        labels=list(spec.class_names) if spec.class_names is not None else None,
    )


def plan(videos: list[Path], settings: BatchSettings, options, artifact_digest: str) -> list[Job]:
    out = settings.out_dir.absolute()
    config = json.dumps(
        {"artifact": artifact_digest, "json_only": settings.json_only, **asdict(options)},
        sort_keys=True,
    )
    jobs = []
    for video, key in zip(videos, output_keys(videos)):
        stamp = hashlib.sha256(f"{config}|{video}|{_video_stamp(video)}".encode()).hexdigest()
        jobs.append(
            Job(
                video=str(video),
                key=key,
                mp4=None if settings.json_only else str(out / f"{key}.mp4"),
                sidecar=str(out / f"{key}.json"),
                fingerprint=stamp[:24],
                stage=True,
            )
        )
    return jobs


def _run_jobs(
    jobs: list[Job],
    manifest: Manifest,
    settings: BatchSettings,
    options,
    metadata: dict[str, object],
    log: Callable[[str], None] | None,
) -> BatchReport:
    """Skip the complete jobs, run the others, record each as it finishes."""
    previous = manifest.read()
    for job in jobs:  # recorded, then killed before the renames: finish them
        finish_publishing(job, previous.get(job.key))
    todo = [job for job in jobs if not is_complete(job, previous.get(job.key))]
    report = BatchReport(total=len(jobs), skipped=len(jobs) - len(todo))
    for job in jobs:  # what killed runs left: unrecorded staged outputs, .part files
        remove_stale(*job.outputs)
        for stale in partial_paths(job):
            with writing(stale):
                stale.unlink(missing_ok=True)
    runner = "ray" if settings.ray else "local"
    report.runner = runner

    def on_record(job: Job, record: dict[str, object]) -> None:
        record = {
            **record,
            "fingerprint": job.fingerprint,
            "runner": runner,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_error = record.pop("write_error", False)
        if record["status"] != "ok":
            discard(job)
        manifest.append(record)  # recorded first: an output on disk always has its record
        if record["status"] == "ok":
            publish(job)
        report.records.append(record)
        if record["status"] == "ok":
            report.ok += 1
        else:
            report.failed += 1
        if log is not None:
            done = report.ok + report.failed
            tail = (
                f"{record.get('seconds', 0):.1f} s" if record["status"] == "ok" else record["error"]
            )
            log(f"[{done}/{len(todo)}] {record['status']:6} {Path(job.video).name}: {tail}")
        if write_error:  # every later video would fail the same way: stop with one line
            raise OutputError(str(record["error"]).removeprefix("OutputError: "))

    if todo:
        artifact = str(settings.artifact.absolute())
        if settings.ray:
            threads = settings.threads or 1
            init_args = (artifact, threads, options, metadata)
            report.workers = run_ray(
                todo, settings.ray, settings.workers, threads, init_args, on_record
            )
        else:
            cores = cpu_count()
            report.workers = max(1, min(settings.workers or cores, len(todo)))
            threads = settings.threads or max(1, cores // report.workers)
            init_args = (artifact, threads, options, metadata)
            run_local(todo, report.workers, threads, init_args, on_record)
        report.threads = threads
    return report


def run_batch(
    input_spec: str | os.PathLike | Iterable[str | os.PathLike],
    settings: BatchSettings,
    log: Callable[[str], None] | None = None,
) -> BatchReport:
    """Explain every video `input_spec` names (see find_videos; or an iterable of paths) into
    `settings.out_dir`; returns the counts and this run's records."""
    import gradvis_runtime

    started = time.perf_counter()
    settings = replace(settings, artifact=Path(settings.artifact), out_dir=Path(settings.out_dir))
    out = settings.out_dir
    for flag, value in (("--workers", settings.workers), ("--threads", settings.threads)):
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: give at least 1")
    if settings.limit is not None and settings.limit < 0:
        raise InputError(f"--limit {settings.limit}: give 0 or more videos")
    if not out.parent.exists():
        raise InputError(f"the folder {str(out.parent)!r} of --out does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder")
    if isinstance(input_spec, (str, os.PathLike)):
        videos = find_videos(input_spec, exclude=out)
    else:
        videos = [Path(v).absolute() for v in input_spec]
    if settings.limit is not None:
        videos = videos[: settings.limit]
    spec = gradvis_runtime.load(settings.artifact).spec  # a broken artifact stops here, once
    options = video_options(spec, settings)
    metadata = {"method": spec.method, "artifact": str(settings.artifact)}
    jobs = plan(videos, settings, options, file_digest(settings.artifact))
    with writing(out / MANIFEST):
        out.mkdir(exist_ok=True)
    manifest = Manifest(out / MANIFEST)
    manifest.open()
    try:
        report = _run_jobs(jobs, manifest, settings, options, metadata, log)
    finally:
        manifest.close()
    report.seconds = time.perf_counter() - started
    return report
