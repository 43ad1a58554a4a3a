"""The method registry: one public name per method, the same in the class, the CLI, the
artifact's contract and `gv.make_explainer`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import gradvis_export as gv
import gradvis_runtime
from gradvis_export.apps import cli

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

#: the names the registry promises (issue 24), in its order
NAMES = [
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "gradcam-elementwise",
    "layercam",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
    "reciprocam",
    "guided",
    "guided-gradcam",
]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    # A head with some gain: ReciproCAM keeps one of the 64 positions per copy, so the random
    # init's class probabilities would differ by < 1e-3 between positions, and the min-max
    # would compare the runtimes' float rounding, magnified ~1000x.
    with torch.no_grad():
        net[6].weight.mul_(10.0)
    return net


def test_registry_holds_the_thirteen_names_each_its_class_name():
    assert list(gv.METHODS) == NAMES
    for name, cls in gv.METHODS.items():
        assert cls.method == name, cls
    with pytest.raises(TypeError):
        gv.METHODS["mine"] = gv.GradCAM  # read-only
    assert gv.GradECLIP.method not in gv.METHODS  # a CLIP explainer, not a model + layer one


@pytest.mark.parametrize("name", NAMES)
def test_exported_artifact_records_the_name(tmp_path, name):
    cls = gv.METHODS[name]
    explainer = gv.make_explainer(
        name,
        tiny(),
        "2" if cls.takes_layer else None,
        activations="relu" if cls.takes_activations else None,
    )
    assert type(explainer) is cls and explainer.method == name
    x = torch.randn(2, 3, 8, 8)
    path = gv.export(explainer, x, tmp_path / "a.onnx", check=False)
    rt = gradvis_runtime.load(path)
    assert rt.spec.method == name
    assert rt.spec.layers == (("2",) if cls.takes_layer else ())
    want = explainer(x[:1], torch.tensor([1]))
    got = rt.run(x[:1].numpy(), target=[1])
    torch.testing.assert_close(torch.from_numpy(got["heatmap"]), want.heatmap, rtol=1e-4, atol=1e-5)


def test_make_explainer_refuses_what_a_method_does_not_take():
    with pytest.raises(gv.GradvisError, match=r"unknown method 'gradcm' \(did you mean gradcam"):
        gv.make_explainer("gradcm", tiny())
    with pytest.raises(gv.GradvisError, match="guided reads no layer"):
        gv.make_explainer("guided", tiny(), "2")
    with pytest.raises(gv.GradvisError, match="gradcam guides no activations"):
        gv.make_explainer("gradcam", tiny(), "2", activations="all")
    ablation = gv.make_explainer("ablationcam", tiny(), "2", chunk_size=3)
    assert ablation.chunk_size == 3


def test_cli_choices_are_exactly_the_registry(capsys):
    assert cli.method_names() == NAMES
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["explain", "--method", "guided_backprop"])
    assert "invalid choice: 'guided_backprop'" in capsys.readouterr().err
    # 80 columns: the help wraps the list at spaces only, never inside "guided-gradcam"
    out = subprocess.run(
        [sys.executable, "-m", "gradvis_export.apps.cli", "explain", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    ).stdout
    listed = " ".join(out.split()).split("--method METHOD one of ", 1)[1].split(" (default")[0]
    assert listed.split(", ") == NAMES
