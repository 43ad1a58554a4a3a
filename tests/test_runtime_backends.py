"""gradvis_runtime on every backend against eager autograd: onnxruntime, TorchScript,
AOTInductor and the C++ library through the pybind11 bridge, for a 2-D net and X3D-XS, at
batch sizes other than the export's (2), with per-sample targets and -1 = argmax (rtol 1e-4).
Plus the contract written at export, read back by every backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

import gradvis_export as gv
import gradvis_runtime

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

RUNS = rc.RUNS


@pytest.mark.parametrize("case", list(rc.CASES))
@pytest.mark.parametrize(("fmt", "backend"), RUNS)
def test_backend_matches_eager(case, fmt, backend):
    if (fmt, backend) == ("onnx", "cpp"):
        rc.require_cpp_onnx()
    rt = gradvis_runtime.load(rc.artifact(case, fmt), backend=backend, threads=2)
    assert rt.backend == backend
    for batch, seed in ((1, 21), (3, 22)):
        x, target = rc.sample(case, batch, seed)
        rc.assert_close(rt.run(x, target), rc.eager(case, x, target), f"{case} {backend} b{batch}")


@pytest.mark.parametrize(("fmt", "backend"), RUNS)
def test_two_input_artifact_takes_both_call_forms(fmt, backend):
    """A SlowFast-style artifact (input_0, input_1): a list in graph order, or each by name,
    equal to eager at batch 1 and 3; a wrong call says how to make it."""
    if (fmt, backend) == ("onnx", "cpp"):
        rc.require_cpp_onnx()
    rt = gradvis_runtime.load(rc.artifact("twopath", fmt), backend=backend, threads=2)
    assert [s.name for s in rt.spec.data_inputs] == ["input_0", "input_1"]
    for batch, seed in ((1, 51), (3, 52)):
        (slow, fast), target = rc.sample("twopath", batch, seed)
        want = rc.eager("twopath", [slow, fast], target)
        rc.assert_close(rt.run([slow, fast], target=target), want, f"{backend} list b{batch}")
        named = rt.run(input_0=slow, input_1=fast, target=target)
        rc.assert_close(named, want, f"{backend} named b{batch}")
    with pytest.raises(ValueError, match=r"2 data inputs \(input_0, input_1\).*input_0=\.\.\."):
        rt.run(slow, target=target)
    with pytest.raises(ValueError, match="needs the data input.*input_1"):
        rt.run(input_0=slow)
    with pytest.raises(ValueError, match="given twice"):
        rt.run([slow, fast], input_1=fast)
    with pytest.raises(ValueError, match="batch sizes"):
        rt.run([slow, fast[:1]])
    with pytest.raises(ValueError, match=r"input 'input_0' has shape"):
        rt.run([fast, fast])


@pytest.mark.parametrize("case", list(rc.CASES))
def test_contract_round_trips(case):
    """What gv.export writes is what every runtime reads, through the one contract type."""
    from gradvis_runtime import InputSpec

    shapes = rc._SHAPES[case] if rc.multi(case) else (rc._SHAPES[case],)
    names = [f"input_{i}" for i in range(len(shapes))] if rc.multi(case) else ["input"]
    data = [
        InputSpec(name, "data", "float32", ("B", *s[1:]), "BCHW" if len(s) == 4 else "BCTHW")
        for name, s in zip(names, shapes)
    ]
    big = max(shapes, key=lambda s: int(np.prod(s[2:])))  # the maps' input: most positions
    want = {
        "method": "gradcam",
        "gradvis_version": gv.__version__,
        "input_names": [*names, "target"],
        "output_names": ["logits", "heatmap"],
        "data_inputs": data,
        "map_input": names[shapes.index(big)],
        "layout": "BCHW" if len(big) == 4 else "BCTHW",
        "clip_len": None if len(big) == 4 else big[2],
        "class_names": tuple(rc.CLASS_NAMES[case]),
        "num_classes": len(rc.CLASS_NAMES[case]),
        "layers": (rc.CASES[case]().target_layer,),
    }
    with_onnx = rc.cpp_onnx_available()  # the other runtimes are checked either way
    read = {}
    for fmt, backend in RUNS:
        if (fmt, backend) == ("onnx", "cpp") and not with_onnx:
            continue
        spec = gradvis_runtime.load(rc.artifact(case, fmt), backend=backend).spec
        for key, value in want.items():
            assert getattr(spec, key) == value, f"{backend} ({fmt}): {key}"
        (target,) = spec.target_inputs
        assert (target.name, target.dtype, target.shape, target.default) == (
            "target", "int64", ("B",), -1
        )  # fmt: skip
        assert spec.outputs[0].shape == ("B", len(rc.CLASS_NAMES[case]))
        assert spec.outputs[1].shape == ("B", *big[2:])
        assert spec.format == fmt
        read[backend, fmt] = spec
    # the C++ library's own parse of the specs agrees with the JSON
    from gradvis_runtime import _cpp

    for fmt in ("torchscript", "aoti", "onnx") if with_onnx else ("torchscript", "aoti"):
        specs = _cpp.Explainer(str(rc.artifact(case, fmt))).input_specs
        assert specs == [
            *((s.name, "data", "float32", [-1, *s.shape[1:]], s.layout, None) for s in data),
            ("target", "target", "int64", [-1], None, -1.0),
        ]
        text = _cpp.Explainer(str(rc.artifact(case, fmt))).metadata_json
        assert gradvis_runtime.ArtifactSpec.from_json(text) == read["cpp", fmt]


def test_errors_are_clear(tmp_path, monkeypatch):
    rt = gradvis_runtime.load(rc.artifact("net2d", "aoti"))
    x, _ = rc.sample("net2d", 2, 0)
    with pytest.raises(ValueError, match=r"takes \('B', 3, 32, 32\)"):
        rt.run(x[:, :2])
    with pytest.raises(ValueError, match="no input 'mask'"):
        rt.run(x, mask=np.ones((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match="target has shape"):
        rt.run(x, target=np.array([1, 2, 3]))
    with pytest.raises(FileNotFoundError, match="no artifact"):
        gradvis_runtime.load(tmp_path / "missing.pt2")
    with pytest.raises(ValueError, match="unknown backend"):
        gradvis_runtime.load(rc.artifact("net2d", "aoti"), backend="tensorrt")
    from gradvis_runtime import _cpp

    with monkeypatch.context() as patch:  # a build without ONNX Runtime says how to get one
        patch.setattr(_cpp, "has_onnxruntime", False)
        with pytest.raises(ValueError, match="GRADVIS_ONNXRUNTIME_ROOT.*backend='onnxruntime'"):
            gradvis_runtime.load(rc.artifact("net2d", "onnx"), backend="cpp")
    with pytest.raises(ValueError, match=r"must end in \.pt2"):
        gv.export(rc.explainer("net2d"), rc.sample("net2d", 2, 0)[0], tmp_path / "a.pt", "aoti")
    assert not list(tmp_path.iterdir())


def test_session_config_reaches_onnxruntime(monkeypatch):
    """Config entries arrive in the options onnxruntime's session is built with, and the
    video job's no-spinning setting changes no number.  Backends without onnxruntime refuse
    the argument instead of ignoring it."""
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def spy(path, options=None, **kwargs):
        seen.append(options)
        return real(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    x, target = rc.sample("net2d", 3, 31)
    sleeping = gradvis_runtime.load(
        rc.artifact("net2d", "onnx"), session_config={"session.intra_op.allow_spinning": "0"}
    )
    assert seen[-1].get_session_config_entry("session.intra_op.allow_spinning") == "0"
    rc.assert_close(sleeping.run(x, target), rc.eager("net2d", x, target), "no spinning")
    with pytest.raises(ValueError, match="session_config holds onnxruntime settings"):
        gradvis_runtime.load(rc.artifact("net2d", "torchscript"), session_config={"a": "1"})


def test_damaged_artifacts_are_refused_with_a_clear_error(tmp_path):
    """Truncated files and damaged metadata: a ValueError that names the file, not a trace
    from inside onnxruntime or NumPy (tests/fuzz/fuzz_artifact.py explores many more)."""

    import onnx
    import torch
    from torch import nn

    import gradvis_export as gv
    import gradvis_runtime

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    good = gv.export(gv.GradCAM(model, "1"), torch.randn(2, 3, 8, 8), tmp_path / "good.onnx")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.onnx.*not a valid onnxruntime artifact"):
        gradvis_runtime.load(truncated)
    proto = onnx.load(good)
    for entry in proto.metadata_props:
        if entry.key == "gradvis":
            meta = json.loads(entry.value)
            meta["inputs"][0]["dtype"] = "float33"
            entry.value = json.dumps(meta)
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, damaged)
    with pytest.raises(ValueError, match=r"damaged.onnx.*field 'inputs\[0\].dtype'.*float33"):
        gradvis_runtime.load(damaged)
