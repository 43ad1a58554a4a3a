"""Soak and leak with small budgets (GRADVIS_SOAK_CALLS, default 1500 calls per runtime, and a
GRADVIS_SOAK_VIDEO_SECONDS video, default 40 s); `benchmarks/soak.py` runs the full ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak  # noqa: E402

CALLS = int(os.environ.get("GRADVIS_SOAK_CALLS", "1500"))
VIDEO_SECONDS = float(os.environ.get("GRADVIS_SOAK_VIDEO_SECONDS", "40"))


@pytest.mark.long
def test_runtimes_and_video_job_do_not_grow_memory(tmp_path):
    results = soak.run(CALLS, VIDEO_SECONDS / 60, tmp_path)
    names = [r["runtime"] for r in results]
    assert names[:2] == ["onnxruntime", "torchscript"] and names[-1] == "video pipeline"
    assert results[-1]["frames"] == int(VIDEO_SECONDS * 30)
    for r in results:
        print(r)
        assert r["growth"] < 0.05, r
