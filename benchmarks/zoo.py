"""The model-zoo compatibility matrix, run in full, written to docs/ZOO.md.

Every architecture of tests/zoo_models.py (torchvision classifiers, pytorchvideo models;
seeded random init, small inputs) x Grad-CAM, guided backprop, guided Grad-CAM: the default
target layer, eager against the independent references of tests/zoo_checks.py, then ONNX
(onnxruntime) and TorchScript exports checked against eager on fresh inputs at batch 1 and 3
-- the same checks as `pytest tests/test_zoo.py --zoo`, plus the export time and the latency of
each artifact against the eager explainer (batch 1, one thread, median of `--repeats` calls).

    python benchmarks/zoo.py --jobs 2               # the whole matrix on 2 cores (see docs/ZOO.md)
    python benchmarks/zoo.py --models resnet18 x3d  # some rows; docs/ZOO.md is not rewritten
    python benchmarks/zoo.py --out /tmp/ZOO.md      # elsewhere

Rows are appended to a JSON-lines file as they finish (`--rows`, default build/zoo_rows.jsonl)
and rows already there are not run again, so an interrupted run resumes; `--shard I/N` runs
every N-th model, `--jobs N` runs N such shards in N processes (one thread each: exporting is
mostly single-threaded Python, so processes use the cores where threads would not) and writes
the table with the run's wall time, and `--table-only` writes the table from the rows file.

A failing cell keeps its reason (the first line of the error) for the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from zoo_checks import (  # noqa: E402
    FORMATS,
    METHODS,
    _inputs,
    artifact_path,
    check_eager,
    check_export,
    explainer_for,
    input_names,
    targets_for,
)
from zoo_models import ZOO, make_inputs  # noqa: E402

import gradvis_export as gv  # noqa: E402

LABELS = {"gradcam": "Grad-CAM", "guided": "guided backprop", "guided-gradcam": "guided Grad-CAM"}


def reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:160].replace("|", "/")


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loaded(path: Path, fmt: str, names: list[str], feeds: list[np.ndarray]):
    """A call of the artifact, loaded once (one onnxruntime / torch thread)."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, dict(zip(names, feeds)))
    module = torch.jit.load(str(path))
    tensors = [torch.from_numpy(f) for f in feeds]

    def run():
        with torch.inference_mode():
            return module(*tensors)

    return run


def run_row(name: str, method: str, folder: Path, repeats: int) -> dict:
    """One model x method: eager, then each format; every failure kept with its reason."""
    entry = ZOO[name]
    row: dict = {"model": name, "family": entry.family, "video": entry.video, "method": method}
    try:
        model = entry.build()
        explainer = explainer_for(method, model)
        check_eager(entry, model, explainer, method)
        row["layer"] = explainer.layers[0][0] if hasattr(explainer, "layers") else "-"
        row["eager"] = None
    except Exception as error:  # noqa: BLE001 - the table records it
        row["eager"] = reason(error)
        row.update({fmt: "not run: eager failed" for fmt in FORMATS})
        return row
    x = make_inputs(entry, 1, seed=300)
    target = targets_for(1)
    row["eager_ms"] = median_ms(lambda: explainer(x, target), repeats)
    feeds = [t.numpy() for t in _inputs(x)] + [target.numpy()]
    for fmt in FORMATS:
        try:
            row[f"{fmt}_export_s"] = check_export(entry, explainer, fmt, folder, False, keep=True)
            path = artifact_path(entry, explainer, fmt, folder)
            row[f"{fmt}_ms"] = median_ms(loaded(path, fmt, input_names(entry), feeds), repeats)
            path.unlink()
            row[fmt] = None
        except Exception as error:  # noqa: BLE001
            row[fmt] = reason(error)
            if os.environ.get("GRADVIS_ZOO_TRACEBACK"):
                traceback.print_exc()
    return row


def cell(row: dict, key: str) -> str:
    return "✔" if row.get(key, "") is None else "✘"


def table(rows: list[dict], seconds: float, wall: str = "") -> str:
    passing = [r for r in rows if all(r.get(k, "") is None for k in ("eager", *FORMATS))]
    lines = [
        "# Model-zoo compatibility matrix",
        "",
        "Generated by `python benchmarks/zoo.py` (the checks of `pytest tests/test_zoo.py "
        "--zoo`); do not edit by hand.",
        "",
        f"Run of {date.today().isoformat()}: gradvis {gv.__version__}, torch {torch.__version__}, "
        f"{platform.machine()}, one thread per process; {len(rows)} rows, {seconds / 60:.1f} "
        "minutes of row time (the sum over rows, as one process runs them)"
        f"{wall}; "
        f"**{len(passing)} of {len(rows)} rows ({100 * len(passing) / max(len(rows), 1):.0f} %) "
        "pass eager and both formats.**",
        "",
        "Each row: a seeded random-init model at a small input (tests/zoo_models.py says what "
        "was shrunk), the default target layer (`gradvis_export.core.layers.default_layer`: the last "
        "spatial feature map the output depends on), eager against an independent reference "
        "(autograd Grad-CAM; guided backprop through a TorchFunctionMode), then each artifact "
        "exported from a batch-2 example and compared with eager on fresh inputs at batch 1 and "
        "3, elementwise to 1e-3 of the largest value; guided maps may differ in up to 1 in "
        "1,000 elements (a ReLU input within rounding of 0 opens in one runtime and not the other: "
        "onnxruntime's layout optimisations flip 17-28 elements of guided backprop on "
        "inception_v3, c2d and i3d, none at ORT_ENABLE_EXTENDED), the allowance of gv.export's "
        "guard. Latency: batch 1, median; ratio = artifact / eager explainer.",
        "",
        "| model | family | method | layer | eager | ONNX | TorchScript | export s (ONNX / TS) "
        "| eager ms | ONNX ms (ratio) | TS ms (ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eager_ms = r.get("eager_ms")

        def latency(fmt: str, r=r, eager_ms=eager_ms) -> str:
            ms = r.get(f"{fmt}_ms")
            return "–" if ms is None or not eager_ms else f"{ms:.0f} ({ms / eager_ms:.2f}×)"

        exports = " / ".join(
            f"{r[f'{fmt}_export_s']:.1f}" if f"{fmt}_export_s" in r else "–" for fmt in FORMATS
        )
        lines.append(
            f"| {r['model']} | {r['family']}{' (video)' if r['video'] else ''} "
            f"| {LABELS[r['method']]} | `{r.get('layer', '–')}` | {cell(r, 'eager')} "
            f"| {cell(r, 'onnx')} | {cell(r, 'torchscript')} | {exports} "
            f"| {'–' if eager_ms is None else f'{eager_ms:.0f}'} | {latency('onnx')} "
            f"| {latency('torchscript')} |"
        )
    have = {(r["model"], r["method"]) for r in rows}
    missing = [name for name in ZOO if any((name, m) not in have for m in METHODS)]
    if missing:
        lines[5:5] = [
            "",
            f"**Partial run: {len(rows)} of {len(ZOO) * len(METHODS)} rows.** Not run yet: "
            f"{', '.join(missing)} (`python benchmarks/zoo.py` resumes from its rows file).",
        ]
    failures = [(r, k) for r in rows for k in ("eager", *FORMATS) if r.get(k) not in (None, "")]
    lines += ["", "## Failures", ""]
    if not failures:
        lines.append("None.")
    for r, key in failures:
        lines.append(f"- {r['model']} × {LABELS[r['method']]} × {key}: {r[key]}")
    return "\n".join(lines) + "\n"


def run_shards(args: argparse.Namespace) -> str:
    """Run `--jobs` shards as child processes on the same rows file; returns the wall-time
    phrase for the table ("" when rows were resumed: their time is not in this run's)."""
    resumed = args.rows.is_file() and args.rows.stat().st_size > 0
    forwarded = ["--repeats", str(args.repeats), "--rows", str(args.rows)]
    forwarded += ["--methods", *args.methods] + (["--models", *args.models] if args.models else [])
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--shard", f"{i}/{args.jobs}", *forwarded],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for i in range(1, args.jobs + 1)
    ]
    codes = [child.wait() for child in children]
    if any(codes):
        raise SystemExit(f"a shard failed (exit codes {codes}); re-run to resume")
    minutes = (time.perf_counter() - start) / 60
    print(f"{args.jobs} shards done in {minutes:.1f} minutes", file=sys.stderr)
    if resumed:
        phrase = ", resumed from earlier rows (wall time not measured)"
    else:
        phrase = f", **{minutes:.1f} minutes of wall time in {args.jobs} processes**"
    wall_file(args.rows).write_text(phrase)  # for a later --table-only of the same rows
    return phrase


def wall_file(rows: Path) -> Path:
    return rows.with_name(rows.name + ".wall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(ZOO), default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default: docs/ZOO.md (full run)")
    parser.add_argument("--rows", type=Path, default=ROOT / "build" / "zoo_rows.jsonl")
    parser.add_argument("--shard", default="1/1", help="I/N: every N-th model from the I-th")
    parser.add_argument("--jobs", type=int, default=1, help="run N shards in N processes")
    parser.add_argument("--table-only", action="store_true", help="write the table from --rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wall = ""
    if args.jobs > 1 and not args.table_only:
        if args.shard != "1/1":
            parser.error("--jobs runs the shards itself; give --shard or --jobs, not both")
        wall = run_shards(args)
    elif args.table_only and wall_file(args.rows).is_file():
        wall = wall_file(args.rows).read_text()
    index, count = (int(v) for v in args.shard.split("/"))
    names = (args.models or list(ZOO))[index - 1 :: count]
    done = {}
    if args.rows.is_file():
        for line in args.rows.read_text().splitlines():
            row = json.loads(line)
            done[row["model"], row["method"]] = row
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate([] if args.table_only or args.jobs > 1 else names, 1):
            for method in args.methods:
                if (name, method) in done:
                    continue
                t0 = time.perf_counter()
                row = run_row(name, method, Path(tmp), args.repeats)
                row["seconds"] = time.perf_counter() - t0
                done[name, method] = row
                wall_file(args.rows).unlink(missing_ok=True)  # the measured run's rows changed
                with args.rows.open("a") as rows_file:
                    rows_file.write(json.dumps(row) + "\n")
                status = " ".join(f"{k}:{cell(row, k)}" for k in ("eager", *FORMATS))
                print(
                    f"[{i}/{len(names)}] {name:<22} {method:<15} {status}  "
                    f"{time.perf_counter() - t0:5.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    if args.shard != "1/1" and not args.table_only:
        return 0  # the table comes from --table-only once every shard is done
    order = {name: i for i, name in enumerate(ZOO)}
    rows = sorted(
        (r for r in done.values() if r["method"] in args.methods),
        key=lambda r: (order[r["model"]], METHODS.index(r["method"])),
    )
    rows = [r for r in rows if args.models is None or r["model"] in args.models]
    text = table(rows, sum(r.get("seconds", 0.0) for r in rows), wall)
    out = args.out or (ROOT / "docs" / "ZOO.md" if args.models is None else None)
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)
    failed = sum(1 for r in rows if any(r.get(k) not in (None, "") for k in ("eager", *FORMATS)))
    print(f"{len(rows) - failed} of {len(rows)} rows pass", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
