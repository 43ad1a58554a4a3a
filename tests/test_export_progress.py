"""`gv.export(..., progress=callable)`: one line per stage, in the order of the data path
(docs/ARCHITECTURE.md, "gv.export"), each with the seconds since the export began."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import gradvis_export as gv

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

LINE = re.compile(r"\[ *(\d+\.\d) s\] (.+)")


def cam() -> gv.GradCAM:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    return gv.GradCAM(model.eval(), "1")


def x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def stages(lines: list[str]) -> list[str]:
    """The stage texts, after checking each line's form and that the times never go back."""
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    seconds = [float(m.group(1)) for m in parsed]
    assert seconds == sorted(seconds), lines
    return [m.group(2) for m in parsed]


def test_stages_in_order(tmp_path):
    lines: list[str] = []
    path = gv.export(cam(), x(), tmp_path / "cam.onnx", progress=lines.append)
    got = stages(lines)
    nodes = [int(n) for n in re.findall(r"\((\d+) nodes\)", " ".join(got))]
    assert len(nodes) == 2 and all(n > 0 for n in nodes)
    assert [re.sub(r" \(\d+ nodes\)", "", s) for s in got[:-1]] == [
        "running the explainer once (eager, batch 1)",
        "tracing forward and backward",
        "graph passes and checks",
        "writing onnx",
        "checking the artifact against eager (batch 3 and 1)",
    ]
    assert re.fullmatch(rf"wrote {re.escape(str(path))} \(\d+\.\d [kM]B\) in \d+\.\d s", got[-1])


def test_optional_stages_appear_only_when_asked(tmp_path):
    lines: list[str] = []
    gv.export(
        cam(),
        x(),
        tmp_path / "cam.onnx",
        precision="fp16",
        profile="onnxruntime-cpu",
        check=False,
        progress=lines.append,
    )
    got = [re.sub(r" \(\d+ nodes\)", "", s) for s in stages(lines)]
    assert got[:6] == [
        "running the explainer once (eager, batch 1)",
        "tracing forward and backward",
        "graph passes and checks",
        "converting to float16",
        "onnxruntime-cpu profile passes",
        "writing onnx",
    ]
    assert got[6].startswith("wrote ") and len(got) == 7  # check=False: no guard line


def test_silent_by_default(tmp_path, capsys):
    gv.export(cam(), x(), tmp_path / "cam.pt")
    assert capsys.readouterr().out == ""
