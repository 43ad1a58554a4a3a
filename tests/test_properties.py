"""Property-based tests (hypothesis): every public explainer, over input shapes, batch sizes,
targets (in range, -1, out of range), NaN/Inf and all-zero inputs, either returns finite,
correctly shaped outputs or raises a documented error type (`gradvis_export.errors`) whose
message names the problem.

The models are tiny seeded CNNs (2-D and 3-D) so that hypothesis can try many inputs.  The
reference for `-1` (argmax) is the model's own logits, computed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

import gradvis_export as gv
from gradvis_export.errors import GradvisError, InputError

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

K = 4  # classes
ALL = list(gv.METHODS.values())  # every registered method
CAM_METHODS = [m for m in ALL if issubclass(m, gv.BaseCAM)]
GRADIENT_METHODS = [m for m in CAM_METHODS if m.uses_gradients]  # zero gradient: zero map
assert {gv.EigenCAM, gv.ScoreCAM, gv.AblationCAM, gv.ReciproCAM}.isdisjoint(GRADIENT_METHODS)
PROPERTY = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def tiny(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    torch.manual_seed(dims)
    return nn.Sequential(
        conv(3, 6, 3, padding=1),
        nn.ReLU(),
        conv(6, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(8, K),
    ).eval()


MODELS = {2: tiny(2), 3: tiny(3)}


def make(cls, model: nn.Module) -> gv.Explainer:
    if cls is gv.GuidedBackprop:
        return cls(model)
    if cls in (gv.ScoreCAM, gv.AblationCAM, gv.ReciproCAM):
        return cls(model, "3", chunk_size=3)
    return cls(model, "3")


@st.composite
def batches(draw, dims: int) -> torch.Tensor:
    b = draw(st.integers(1, 3))
    spatial = [draw(st.integers(4, 12)) for _ in range(dims)]
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    g = torch.Generator().manual_seed(seed)
    return torch.randn((b, 3, *spatial), generator=g) * scale


def check_output(out, x: torch.Tensor, cls) -> None:
    assert out.logits.shape == (x.shape[0], K)
    assert torch.isfinite(out.logits).all()
    guided = cls in (gv.GuidedBackprop, gv.GuidedGradCAM)  # a gradient image: x's shape
    assert out.heatmap.shape == (x.shape if guided else (x.shape[0], *x.shape[2:]))
    assert torch.isfinite(out.heatmap).all()
    cam = out.cam if cls is gv.GuidedGradCAM else out.heatmap
    if cls is not gv.GuidedBackprop:  # CAMs are normalised per sample
        assert cam.shape == (x.shape[0], *x.shape[2:])
        assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@PROPERTY
@given(data=st.data())
def test_any_valid_input_gives_finite_maps_of_the_right_shape(cls, dims, data):
    model = MODELS[dims]
    x = data.draw(batches(dims))
    targets = data.draw(st.lists(st.integers(-1, K - 1), min_size=x.shape[0], max_size=x.shape[0]))
    explainer = make(cls, model)
    out = explainer(x, torch.tensor(targets))
    check_output(out, x, cls)
    # -1 means the model's argmax, computed here from the model itself
    with torch.no_grad():
        argmax = model(x).argmax(dim=1)
    explicit = torch.where(torch.tensor(targets) < 0, argmax, torch.tensor(targets))
    again = explainer(x, explicit)
    torch.testing.assert_close(again.heatmap, out.heatmap, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@PROPERTY
@given(x=batches(2), bad=st.one_of(st.integers(K, 1000), st.integers(-1000, -2)))
def test_out_of_range_targets_are_refused_with_the_valid_range(cls, x, bad):
    targets = torch.zeros(x.shape[0], dtype=torch.int64)
    targets[-1] = bad
    with pytest.raises(InputError, match=rf"out of range.*{K} classes.*-1"):
        make(cls, MODELS[2])(x, targets)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@PROPERTY
@given(
    x=batches(3),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    where=st.floats(0, 1, exclude_max=True),
)
def test_nan_or_inf_anywhere_is_refused(cls, x, value, where):
    flat = x.flatten()
    flat[int(where * flat.numel())] = value
    with pytest.raises(InputError, match="NaN or infinite"):
        make(cls, MODELS[3])(flat.view_as(x))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_all_zero_input_gives_finite_maps(cls, dims):
    x = torch.zeros(2, 3, *([6] * dims))
    check_output(make(cls, MODELS[dims])(x), x, cls)


@pytest.mark.parametrize("cls", GRADIENT_METHODS, ids=lambda c: c.__name__)
def test_all_zero_gradient_gives_an_all_zero_map(cls):
    """Class 0's logit does not depend on the layer (its fc row is zero): d logit / d A = 0."""
    model = tiny(2)
    with torch.no_grad():
        model[6].weight[0] = 0.0
    x = torch.randn(3, 3, 10, 10)
    out = make(cls, model)(x, torch.zeros(3, dtype=torch.int64))
    assert torch.isfinite(out.heatmap).all()
    assert (out.heatmap == 0).all()


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(2, 3, 8, 8, dtype=torch.float64), "float64 but the model's weights"),
        (torch.randn(2, 3, 8, 8).half(), "float16 but the model's weights"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floating-point"),
        (torch.randn(3, 8, 8), "rank 3"),
        (torch.randn(2, 3, 0, 8), "no values"),
        ([torch.randn(1, 3, 8, 8)], "multi-input"),
    ],
    ids=["float64", "float16", "uint8", "rank3", "empty", "list"],
)
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_bad_input_types_name_the_fix(cls, x, match):
    with pytest.raises(InputError, match=match):
        make(cls, MODELS[2])(x)


def test_errors_are_one_family():
    """Callers catch every documented failure with one `except GradvisError`."""
    assert issubclass(InputError, GradvisError) and issubclass(InputError, ValueError)


# ----------------------------------------------------------------------------- runtimes


@pytest.fixture(scope="module")
def onnx_runtime(tmp_path_factory):
    import gradvis_runtime

    explainer = gv.GradCAM(MODELS[2], "3")
    path = gv.export(explainer, torch.randn(2, 3, 12, 12), tmp_path_factory.mktemp("p") / "c.onnx")
    return explainer, gradvis_runtime.load(path, threads=1)


@PROPERTY
@given(
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_runtime_matches_eager_for_any_batch_and_targets(onnx_runtime, batch, seed, data):
    explainer, runtime = onnx_runtime
    x = torch.randn((batch, 3, 12, 12), generator=torch.Generator().manual_seed(seed))
    targets = data.draw(st.lists(st.integers(-1, K - 1), min_size=batch, max_size=batch))
    got = runtime.run(x.numpy(), target=targets)
    want = explainer(x, torch.tensor(targets))
    np.testing.assert_allclose(got["logits"], want.logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["heatmap"], want.heatmap.numpy(), rtol=1e-4, atol=1e-4)


@PROPERTY
@given(shape=st.lists(st.integers(1, 14), min_size=1, max_size=6))
def test_runtime_refuses_other_shapes_with_the_expected_one(onnx_runtime, shape):
    _, runtime = onnx_runtime
    if len(shape) == 4 and shape[1:] == [3, 12, 12]:
        return  # that one is valid
    with pytest.raises(ValueError, match=r"input has shape.*takes"):
        runtime.run(np.zeros(shape, np.float32))


def test_one_runtime_from_eight_threads_gives_each_caller_its_answer(onnx_runtime):
    from concurrent.futures import ThreadPoolExecutor

    explainer, runtime = onnx_runtime
    inputs = [
        torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(8)
    ]
    want = [explainer(x).heatmap.numpy() for x in inputs]

    def call(i: int) -> np.ndarray:
        return [runtime.run(inputs[i].numpy())["heatmap"] for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    for i, outs in enumerate(results):
        for out in outs:
            np.testing.assert_allclose(out, want[i], rtol=1e-4, atol=1e-4)


# ---------------------------------------------- the torch runtimes (TorchScript, AOTInductor, C++)

#: (format of the file, backend that runs it); the files are the runtime tests' 2-D net
TORCH_RUNS = [
    ("torchscript", "torchscript"),
    ("aoti", "aoti"),
    ("torchscript", "cpp"),
    ("aoti", "cpp"),
]
RUNTIME_PROPERTY = settings(PROPERTY, max_examples=6)
NET2D = list(rc._SHAPES["net2d"][1:])  # (3, 32, 32)


@pytest.fixture(scope="module")
def torch_runtimes():
    import gradvis_runtime

    return {
        (fmt, backend): gradvis_runtime.load(rc.artifact("net2d", fmt), backend=backend, threads=1)
        for fmt, backend in TORCH_RUNS
    }


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation
@pytest.mark.parametrize(("fmt", "backend"), TORCH_RUNS)
@RUNTIME_PROPERTY
@given(batch=st.integers(1, 4), seed=st.integers(0, 2**16), data=st.data())
def test_torch_runtimes_match_eager_for_any_batch_and_targets(
    torch_runtimes, fmt, backend, batch, seed, data
):
    classes = len(rc.CLASS_NAMES["net2d"])
    x, _ = rc.sample("net2d", batch, seed)
    targets = data.draw(st.lists(st.integers(-1, classes - 1), min_size=batch, max_size=batch))
    targets = np.array(targets, dtype=np.int64)
    got = torch_runtimes[fmt, backend].run(x, targets)
    assert got["logits"].shape == (batch, classes)
    assert got["heatmap"].shape == (batch, *NET2D[1:])
    for name, value in got.items():
        assert np.isfinite(value).all(), f"{backend} ({fmt}): {name} is not finite"
    rc.assert_close(got, rc.eager("net2d", x, targets), f"{backend} ({fmt}) batch {batch}")


@st.composite
def wrong_shapes(draw) -> list[int]:
    """Shapes near the artifact's (a size changed, a dimension dropped or added) or any."""
    good = [draw(st.integers(1, 3)), *NET2D]
    how = draw(st.sampled_from(["size", "drop", "add", "any"]))
    if how == "size":
        axis = draw(st.integers(0, len(good) - 1))
        good[axis] = draw(st.integers(1, 40))
    elif how == "drop":
        del good[draw(st.integers(0, len(good) - 1))]
    elif how == "add":
        good.insert(draw(st.integers(0, len(good))), draw(st.integers(1, 3)))
    else:
        good = draw(st.lists(st.integers(1, 34), min_size=1, max_size=6))
    assume(len(good) != 4 or good[1:] != NET2D)  # any batch size is valid
    return good


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation
@pytest.mark.parametrize(("fmt", "backend"), TORCH_RUNS)
@RUNTIME_PROPERTY
@given(shape=wrong_shapes())
def test_torch_runtimes_refuse_other_shapes_with_the_expected_one(
    torch_runtimes, fmt, backend, shape
):
    runtime = torch_runtimes[fmt, backend]
    x = np.zeros(shape, np.float32)
    expected = r"input has shape \(.*\); this artifact takes \(%s3, 32, 32\)"
    with pytest.raises(ValueError, match=expected % "'B', "):
        runtime.run(x)
    if backend == "cpp":  # the C++ library checks too, without the Python checks in front
        with pytest.raises(ValueError, match=expected % "B, "):
            runtime._run({"input": x, "target": np.full(shape[0], -1, np.int64)})
