"""gradvis_runtime runs an ONNX artifact in a process where `torch` cannot be imported (a fake
`torch` package that raises on import comes first on PYTHONPATH), and its answer matches
eager autograd computed here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import gradvis_runtime
    data = np.load(sys.argv[2])
    rt = gradvis_runtime.load(sys.argv[1], threads=1)
    out = rt.run(data["x"], target=data["target"])
    np.savez(sys.argv[3], **out)
    try:
        gradvis_runtime.load(sys.argv[4])
    except ImportError as error:
        print("TS:", error)
    assert "torch" not in sys.modules or sys.modules["torch"] is None
    assert "gradvis_export" not in sys.modules
    print("contract:", rt.spec.method, rt.spec.class_names[0])
    """
)


def test_onnx_runs_without_torch(tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    x, target = rc.sample("net2d", 3, 31)
    np.savez(tmp_path / "in.npz", x=x, target=target)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(rc.artifact("net2d", "onnx")),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
            str(rc.artifact("net2d", "torchscript")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TS: TorchScript and AOTInductor artifacts need torch" in result.stdout
    assert "contract: gradcam class0" in result.stdout
    got = dict(np.load(tmp_path / "out.npz"))
    rc.assert_close(got, rc.eager("net2d", x, target), "onnx without torch")
