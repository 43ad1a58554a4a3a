"""How benchmarks/latency.py times: the variant (one thing timed), round-robin rounds grouped by
runtime, the slow variants timed apart, and the statistics of the samples."""

from __future__ import annotations

import gc
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from latency_cases import RUNTIMES, describe, log


@dataclass
class Variant:
    method: str  # "plain" or a registry name (captum_methods() / cam_methods())
    runtime: str  # one of RUNTIMES
    label: str
    call: Callable[[], object]
    samples: list[float] = field(default_factory=list)
    #: timed apart with --slow-repeats rounds (CAM suite: K full forwards per call)
    slow: bool = False
    #: warm-up calls, when not --warmup
    warmup: int | None = None
    #: what the last call returned
    last: object = None
    #: wall times of the warm-up calls of a slow variant
    warmup_ms: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.runtime}/{self.method}"


def measure(variants: list[Variant], repeats: int, warmup: int, name: str) -> None:
    log(f"{name}: warm-up ({warmup} call(s) per variant, {len(variants)} variants)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in variants:
            for _ in range(warmup if v.warmup is None else v.warmup):
                v.last = v.call()
        groups = [[v for v in variants if v.runtime == rt] for rt in RUNTIMES]
        groups = [g for g in groups if g]
        for r in range(repeats):
            gc.collect()
            gc.disable()
            try:
                for group in groups:
                    shift = r % len(group)
                    for v in group[shift:] + group[:shift]:
                        start = time.perf_counter()
                        out = v.call()
                        v.samples.append((time.perf_counter() - start) * 1e3)
                        v.last = out
            finally:
                gc.enable()
            if (r + 1) % max(1, repeats // 5) == 0 or r + 1 == repeats:
                log(f"{name}: round {r + 1}/{repeats}")


def measure_slow(
    variants: list[Variant], repeats: int, name: str, errors: dict[str, str]
) -> list[Variant]:
    """Time the slow variants: each one's own warm-up, then `repeats` round-robin rounds
    (onnxruntime first, the order rotating inside each runtime).  A variant whose call raises
    is dropped and its error recorded; returns the variants that ran."""
    alive = list(variants)

    def attempt(v: Variant, timed: bool) -> None:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = v.call()
        except Exception as error:
            who = "pytorch-grad-cam cannot run" if v.runtime == "eager" else "the run failed"
            errors[v.key] = f"{who}: {describe(error)}"
            log(f"{name}: {v.key}: {errors[v.key]}")
            alive.remove(v)
            return
        seconds = time.perf_counter() - start
        v.last = out
        (v.samples if timed else v.warmup_ms).append(seconds * 1e3)
        log(f"{name}: {v.key} {'timed' if timed else 'warm-up'} call {seconds:.1f}s")

    if not variants:
        return []
    log(f"{name}: slow variants: {', '.join(v.key for v in variants)} ({repeats} round(s))")
    for v in variants:
        for _ in range(v.warmup or 0):
            if v in alive:
                attempt(v, timed=False)
    for r in range(repeats):
        for rt in RUNTIMES:
            group = [v for v in alive if v.runtime == rt]
            if not group:
                continue
            shift = r % len(group)
            for v in group[shift:] + group[:shift]:
                gc.collect()
                attempt(v, timed=True)
    return alive


def stats(samples: list[float]) -> dict[str, float]:
    q = np.percentile(samples, [25, 50, 75])
    return {
        "median_ms": float(statistics.median(samples)),
        "p25_ms": float(q[0]),
        "p75_ms": float(q[2]),
        "min_ms": float(min(samples)),
        "n": len(samples),
    }


def paired_ratio(a: Variant, b: Variant) -> float:
    """Median over rounds of a's time / b's time in the same round (less sensitive to load
    that changes between rounds than the ratio of the medians)."""
    return float(statistics.median(x / y for x, y in zip(a.samples, b.samples)))
