"""Runs the atheris fuzzers of tests/fuzz/ for a bounded time (GRADVIS_FUZZ_SECONDS, default
20 s each): no crash, hang or exception other than the documented error types.  The artifact
fuzzer shares its time among ONNX, TorchScript and AOTInductor files (its first input byte
picks the format); its .pt2 seed is the runtime tests' package, compiled here once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import atheris  # noqa: F401 - the fuzzing engine (dev extra): a missing one fails here
import pytest

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("GRADVIS_FUZZ_SECONDS", "20"))


@pytest.mark.long
@pytest.mark.parametrize("target", ["fuzz_video.py", "fuzz_artifact.py"])
def test_fuzzer_finds_no_crash(target, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime")]),
        "OMP_NUM_THREADS": "1",
    }
    if target == "fuzz_artifact.py":  # the .pt2 seed: compiled once, not in the fuzzer's time
        sys.path.insert(0, str(ROOT / "tests"))
        import runtime_cases as rc

        rc.artifact("net2d", "aoti")
        env["GRADVIS_ARTIFACT_DIR"] = str(rc.artifact_dir())
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "fuzz" / target),
            f"-max_total_time={SECONDS}",
            "-timeout=30",  # one input decoding for 30 s is a hang
            # libFuzzer checks the peak RSS, which Linux carries over from the forking pytest
            # process (often > 2 GB, libFuzzer's default limit): a leak shows as growth past 8 GB
            "-rss_limit_mb=8192",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=SECONDS + 120,
    )
    log = done.stderr[-4000:]
    assert done.returncode == 0, f"the fuzzer failed (crash input in {tmp_path}):\n{log}"
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) >= 50, log  # it did explore inputs
    print(f"{target}: {runs.group(1)} inputs in {SECONDS} s, no crash")
