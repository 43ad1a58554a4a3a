"""What benchmarks/latency.py prints and writes: each suite's table, the targets' PASS/MISS
verdicts, the agreement of our CAMs with pytorch-grad-cam's, and the environment and
provenance lines (load averages, library versions, the code under test)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from latency_cases import (
    CAM_TARGET_VS_PGC,
    CAM_TARGET_VS_PLAIN,
    CAPTUM_LABELS,
    CLIP_TARGET_VS_PLAIN,
    LABELS,
    RUNTIMES,
    T0,
    TARGET_VS_CAPTUM,
    TARGET_VS_PLAIN,
    ModelCase,
    cam_methods,
    captum_methods,
)
from latency_measure import Variant, paired_ratio, stats

if TYPE_CHECKING:
    from latency_variants import Exports


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def model_report(
    case: ModelCase,
    variants: list[Variant],
    errors: dict[str, str],
    check_failed: dict[str, str],
    export_seconds: dict[str, float],
) -> tuple[list[str], dict]:
    by_key = {v.key: v for v in variants if v.samples}
    med = {k: stats(v.samples)["median_ms"] for k, v in by_key.items()}

    def mark(key: str) -> str:
        return "*" if key in check_failed else ""

    lines = [f"== {case.title}, target layer {case.target_layer!r} =="]
    header = f"{'runtime':<12} {'variant':<32} {'median ms':>10} {'p25-p75 ms':>17} {'x plain':>8}"
    lines += [header, "-" * len(header)]
    for runtime in RUNTIMES:
        for method in ("plain", *captum_methods()):
            key = f"{runtime}/{method}"
            label = CAPTUM_LABELS[method] if runtime == "eager" else LABELS[method]
            if runtime == "eager" and method != "plain":
                label = "captum " + label
            label += mark(key)
            if key not in by_key:
                why = errors.get(key, "not run").splitlines()[0]
                lines.append(f"{runtime:<12} {label:<32} {'--':>10}   ({why[:90]})")
                continue
            s = stats(by_key[key].samples)
            base = med.get(f"{runtime}/plain")
            ratio = f"{s['median_ms'] / base:7.2f}x" if base else f"{'--':>8}"
            spread = f"{s['p25_ms']:.1f}-{s['p75_ms']:.1f}"
            lines.append(f"{runtime:<12} {label:<32} {s['median_ms']:10.1f} {spread:>17} {ratio}")

    lines += ["", "targets (ratio of medians; paired = median of per-round ratios):"]
    ratios = []

    def target_line(name: str, num: str, den: str, limit: float, at_most: bool) -> None:
        sign = "<=" if at_most else ">="
        if num not in by_key or den not in by_key:
            lines.append(f"  {name:<60} {'--':>7}  ({sign} {limit:.2f}x)  n/a")
            ratios.append(
                {
                    "name": name,
                    "ratio": None,
                    "paired_ratio": None,
                    "target": f"{sign} {limit}",
                    "verdict": "n/a",
                }
            )
            return
        value = med[num] / med[den]
        paired = paired_ratio(by_key[num], by_key[den])
        ok = value <= limit if at_most else value >= limit
        lines.append(
            f"  {name:<60} {value:6.2f}x  ({sign} {limit:.2f}x)  {verdict(ok)}"
            f"   paired {paired:.2f}x"
        )
        ratios.append(
            {
                "name": name,
                "ratio": value,
                "paired_ratio": paired,
                "target": f"{sign} {limit}",
                "verdict": verdict(ok),
                "unchecked_artifact": bool(mark(num) or mark(den)),
            }
        )

    for method in captum_methods():
        for runtime in ("onnxruntime", "torchscript"):
            key = f"{runtime}/{method}"
            target_line(
                f"{LABELS[method]}{mark(key)} / plain inference ({runtime})",
                key,
                f"{runtime}/plain",
                TARGET_VS_PLAIN[method],
                at_most=True,
            )
    for method in captum_methods():
        for runtime in ("onnxruntime", "torchscript"):
            key = f"{runtime}/{method}"
            target_line(
                f"captum {CAPTUM_LABELS[method]} / {LABELS[method]}{mark(key)} ({runtime})",
                f"eager/{method}",
                key,
                TARGET_VS_CAPTUM,
                at_most=False,
            )
    info = [
        f"plain {runtime} / eager = {med[f'{runtime}/plain'] / med['eager/plain']:.2f}x"
        for runtime in ("onnxruntime", "torchscript")
        if f"{runtime}/plain" in med and "eager/plain" in med
    ]
    if info:
        lines.append("  (info: " + "; ".join(info) + ")")
    if check_failed:
        lines.append(
            "export check failures (the artifact re-exported with check=False is "
            "timed instead, marked *):"
        )
        for key, text in check_failed.items():
            lines.append(f"  {key}: {text}")
    if errors:
        lines.append("export failures:")
        for key, text in errors.items():
            first, *rest = text.splitlines()
            more = f" [+{len(rest)} more lines in --json]" if rest else ""
            lines.append(f"  {key}: {first}{more}")
    if case.note:
        lines.append(f"note: {case.note}")

    data = {
        "title": case.title,
        "target_layer": case.target_layer,
        "input_shape": list(case.x.shape),
        "variants": {
            k: {
                "runtime": v.runtime,
                "method": v.method,
                "label": v.label,
                "unchecked_artifact": k in check_failed,
                **stats(v.samples),
                "samples_ms": [round(t, 3) for t in v.samples],
            }
            for k, v in by_key.items()
        },
        "ratios": ratios,
        "export_errors": errors,
        "export_check_failures": check_failed,
        "export_seconds": {k: round(t, 1) for k, t in export_seconds.items()},
        "note": case.note,
    }
    return lines, data


def agreement(ours: object, theirs: object) -> tuple[float, float] | None:
    """Pearson r and max abs difference of our heatmap and pytorch-grad-cam's."""
    if not isinstance(ours, dict) or "heatmap" not in ours or theirs is None:
        return None
    a = np.asarray(ours["heatmap"], dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    if a.std() == 0 or b.std() == 0:
        r = float("nan")
    else:
        r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return r, float(np.abs(a - b).max())


def cam_report(
    case: ModelCase,
    variants: list[Variant],
    ex: Exports,
    methods: list[str],
    work: dict[str, str],
    rounds: tuple[int, int, int, int],
) -> tuple[list[str], dict]:
    """The CAM suite's table, targets and notes; `rounds` = (repeats, warm-up, slow repeats, slow warm-up)."""
    repeats, warmup, slow_repeats, slow_warmup = rounds
    by_key = {v.key: v for v in variants if v.samples}
    last = {v.key: v.last for v in variants}
    med = {k: stats(v.samples)["median_ms"] for k, v in by_key.items()}
    errors = ex.errors

    def mark(key: str) -> str:
        return ("*" if key in ex.check_failed else "") + ("+" if key in ex.unchecked else "")

    def paired(a: str, b: str) -> float | None:
        """Per-round ratio, only for variants timed in the same rounds."""
        if by_key[a].slow != by_key[b].slow:
            return None
        return paired_ratio(by_key[a], by_key[b])

    def show(value: float | None, width: int) -> str:
        return f"{value:{width - 1}.2f}x" if value is not None else f"{'--':>{width}}"

    lines = [
        f"== {case.title}, target layer {case.target_layer!r}: CAM family, "
        "onnxruntime artifact vs pytorch-grad-cam (eager) ==",
        f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant; slow variants "
        f"(p25-p75 column 'slow n=...'): timed apart, {slow_repeats} round(s) after "
        f"{slow_warmup} warm-up call(s); {ex.args.threads} threads, batch 1",
    ]
    header = (
        f"{'method':<26} {'ours ms':>9} {'p25-p75':>13} {'x plain':>8}  "
        f"{'pgc ms':>9} {'p25-p75':>13} {'x plain':>8}  {'pgc/ours':>8} {'paired':>7}  "
        f"{'agree r':>7} {'max|d|':>7}"
    )
    lines += [header, "-" * len(header)]

    def cell(key: str) -> tuple[str, str, str]:
        if key not in by_key:
            return f"{'--':>9}", f"{'':>13}", f"{'':>8}"
        s = stats(by_key[key].samples)
        base = med.get(f"{key.split('/')[0]}/plain")
        spread = f"{s['p25_ms']:.1f}-{s['p75_ms']:.1f}"
        if by_key[key].slow:
            spread = f"slow n={s['n']}"
        ratio = f"{s['median_ms'] / base:7.2f}x" if base else f"{'--':>8}"
        return f"{s['median_ms']:9.1f}", f"{spread:>13}", ratio

    table = []
    for name in ("plain", *methods):
        ours, theirs = f"onnxruntime/{name}", f"eager/{name}"
        label = LABELS["plain"] if name == "plain" else cam_methods()[name].label
        label += mark(ours) or mark(theirs)
        a, b = cell(ours), cell(theirs)
        row = {"method": name, "label": label}
        if ours in by_key and theirs in by_key:
            speedup = med[theirs] / med[ours]
            per_round = paired(theirs, ours)
            ratio = f"{speedup:7.2f}x {show(per_round, 7)}"
            row.update(pgc_over_ours=speedup, paired=per_round)
        else:
            ratio = f"{'--':>8} {'':>7}"
        agree = agreement(last.get(ours), last.get(theirs)) if name != "plain" else None
        close = f"{agree[0]:7.4f} {agree[1]:7.4f}" if agree else ""
        if agree:
            row.update(agree_r=agree[0], agree_max_abs_diff=agree[1])
        lines.append(f"{label:<26} {a[0]} {a[1]} {a[2]}  {b[0]} {b[1]} {b[2]}  {ratio}  {close}")
        table.append(row)
    lines.append(
        "(ours: onnxruntime, x plain = / the bare model on onnxruntime; pgc: pytorch-grad-cam "
        "eager, x plain = / eager torch inference; plain row: eager / onnxruntime)"
    )

    lines += ["", "targets (ratio of medians; paired = median of per-round ratios):"]
    ratios = []

    def why(key: str) -> str:
        return errors.get(key, "not run").splitlines()[0][:110]

    def target_line(name: str, num: str, den: str, limit: float | None, at_most: bool) -> None:
        sign = "<=" if at_most else ">="
        goal = f"({sign} {limit:.2f}x)" if limit is not None else "(info)"
        entry = {"name": name, "target": f"{sign} {limit}" if limit is not None else None}
        if num not in by_key or den not in by_key:
            missing = num if num not in by_key else den
            lines.append(f"  {name:<52} {'--':>8}  {goal:<11} n/a: {missing}: {why(missing)}")
            ratios.append({**entry, "ratio": None, "verdict": "n/a", "why": why(missing)})
            return
        value = med[num] / med[den]
        per_round = paired(num, den)
        result = "" if limit is None else verdict(value <= limit if at_most else value >= limit)
        tail = f"paired {per_round:.2f}x" if per_round is not None else "(slow: timed apart)"
        lines.append(f"  {name:<52} {value:8.2f}x  {goal:<11} {result:<4}  {tail}")
        ratios.append(
            {**entry, "ratio": value, "paired_ratio": per_round, "verdict": result or "info"}
        )

    for name in methods:
        method = cam_methods()[name]
        key = f"onnxruntime/{name}"
        target_line(
            f"{method.label}{mark(key)} / plain inference (onnxruntime)",
            key,
            "onnxruntime/plain",
            CAM_TARGET_VS_PLAIN if method.gradient else None,
            at_most=True,
        )
    for name in methods:
        method = cam_methods()[name]
        if method.pgc_class is None:
            continue  # no pytorch-grad-cam counterpart
        target_line(
            f"pgc {method.pgc_class} / {method.label}{mark(f'onnxruntime/{name}')}",
            f"eager/{name}",
            f"onnxruntime/{name}",
            CAM_TARGET_VS_PGC,
            at_most=False,
        )
    if "onnxruntime/plain" in med and "eager/plain" in med:
        lines.append(
            "  (info: plain inference eager / onnxruntime = "
            f"{med['eager/plain'] / med['onnxruntime/plain']:.2f}x)"
        )
    for name, text in work.items():
        lines.append(f"{cam_methods()[name].label}: {text}")
    for v in variants:
        if v.warmup_ms:
            times = ", ".join(f"{t / 1e3:.1f}s" for t in v.warmup_ms)
            lines.append(f"{v.key}: warm-up call {times} (not in the median)")
        if v.runtime == "onnxruntime" and isinstance(v.last, dict):
            heat = v.last.get("heatmap")
            if heat is None or not np.isfinite(heat).all():
                lines.append(f"WARNING {v.key}: heatmap missing or not finite")
    for title, table_ in (
        ("export check failures (re-exported with check=False, timed, marked *)", ex.check_failed),
        ("exported unchecked on purpose (marked +)", ex.unchecked),
        ("not timed", errors),
    ):
        if table_:
            lines.append(f"{title}:")
            for key, text in table_.items():
                first, *rest = text.splitlines()
                more = f" [+{len(rest)} more lines in --json]" if rest else ""
                lines.append(f"  {key}: {first[:200]}{more}")

    data = {
        "title": case.title,
        "target_layer": case.target_layer,
        "input_shape": list(case.x.shape),
        "chunk_sizes": case.chunk_sizes,
        "repeats": repeats,
        "warmup": warmup,
        "slow_repeats": slow_repeats,
        "slow_warmup": slow_warmup,
        "variants": {
            k: {
                "runtime": v.runtime,
                "method": v.method,
                "label": v.label,
                "slow": v.slow,
                **stats(v.samples),
                "samples_ms": [round(t, 3) for t in v.samples],
            }
            for k, v in by_key.items()
        },
        "table": table,
        "ratios": ratios,
        "work": work,
        "errors": errors,
        "export_check_failures": ex.check_failed,
        "exported_unchecked": ex.unchecked,
        "export_seconds": {k: round(t, 1) for k, t in ex.seconds.items()},
    }
    return lines, data


def clip_report(
    variants: list[Variant],
    errors: dict[str, str],
    rounds: tuple[int, int, int],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> tuple[list[str], dict]:
    """The clip suite's table and targets; `rounds` = (repeats, warm-up, threads), `load` =
    the load averages before and after timing."""
    repeats, warmup, threads = rounds
    load_before, load_after = load
    base = statistics.median(variants[0].samples)
    lines = [
        "CLIP ViT-B/32 (1x3x224x224, random weights): Grad-ECLIP vs the bare image encoder, "
        "onnxruntime",
        f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant, "
        f"{threads} threads, batch 1",
        f"{'variant':34s} {'median ms':>10s} {'x plain':>8s} {'paired':>8s}",
    ]
    data: dict[str, object] = {"variants": {}, "errors": errors}
    for v in variants:
        med = statistics.median(v.samples)
        paired = paired_ratio(v, variants[0])
        lines.append(f"{v.label:34s} {med:10.1f} {med / base:8.2f} {paired:8.2f}")
        data["variants"][v.key] = {**stats(v.samples), "vs_plain": med / base}
    for v in variants[1:]:
        ratio = statistics.median(v.samples) / base
        lines.append(
            f"target {v.label} <= {CLIP_TARGET_VS_PLAIN}x plain: {ratio:.2f}x "
            f"{verdict(ratio <= CLIP_TARGET_VS_PLAIN)}"
        )
    for mode, error in errors.items():
        lines.append(f"Grad-ECLIP ({mode}) not timed: {error}")
    lines.append(f"load average (1/5/15 min) {loads(load_before, load_after)}")
    data["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
    return lines, data


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def loads(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return f"before timing {fmt_load(before)}, after {fmt_load(after)}"


def pgc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grad-cam")
    except PackageNotFoundError:
        return "unknown"


def code_under_test() -> dict[str, str]:
    """Where gradvis_export / gradvis_runtime were imported from, and that tree's git state
    (imported here, once, so a checkout edited during the run does not mix versions)."""
    import subprocess

    import gradvis_export
    import gradvis_runtime

    root = Path(gradvis_export.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "gradvis_export", "runtime"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        git = f"commit {head}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        git = "not a git checkout"
    return {
        "gradvis_export": str(Path(gradvis_export.__file__).parent),
        "gradvis_runtime": str(Path(gradvis_runtime.__file__).parent),
        "version": gradvis_export.__version__,
        "git": git,
    }


def provenance(
    args: argparse.Namespace, suites: tuple[str, ...], methods: list[str], code: dict[str, str]
) -> tuple[dict[str, object], str]:
    """The run's environment for --json ("meta") and the footer line under the tables."""
    import captum
    import onnxruntime
    import pytorch_grad_cam

    meta = {
        "threads": args.threads,
        "batch": 1,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "captum": captum.__version__,
        "pytorch_grad_cam": getattr(pytorch_grad_cam, "__version__", pgc_version()),
        "suites": list(suites),
        "cam_methods": methods if "cam" in suites else [],
        "skip_slow": args.skip_slow,
        "slow_repeats": args.slow_repeats,
        "slow_warmup": args.slow_warmup,
        "wall_seconds": round(time.perf_counter() - T0, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "export_check": not args.no_check,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "code_under_test": code,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    footer = (
        f"median of one call, batch 1, {args.threads} threads; torch {meta['torch']}, "
        f"onnxruntime {meta['onnxruntime']}, captum {meta['captum']}, pytorch-grad-cam "
        f"{meta['pytorch_grad_cam']}; "
        f"{meta['cpu_count']} CPUs; OMP_WAIT_POLICY={meta['OMP_WAIT_POLICY']}\n"
        f"gradvis {code['version']} from {code['gradvis_export']} ({code['git']}); "
        f"whole run {meta['wall_seconds'] / 60:.1f} min"
    )
    return meta, footer
