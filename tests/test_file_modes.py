"""Written files get the mode a normal file gets: 0o666 less the process umask.

An artifact written with mkstemp's 0o600 cannot be read by a Triton container or a colleague.
The expected mode is computed from the umask set here (`0o666 & ~umask`), never read from a
file the code wrote; the umask is restored after each test.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import gradvis_export as gv

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class TinyNet(nn.Module):
    """Two convolutions and a linear head on 3x16x16: quick to trace, write and compile."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.features(x)).mean(dim=(2, 3)))


def cam() -> gv.GradCAM:
    return gv.GradCAM(TinyNet().eval(), "block")


def example() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[callable]:
    """Set the process umask for one test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_export_honours_the_umask(tmp_path, umask, suffix, mask):
    umask(mask)
    path = gv.export(cam(), example(), tmp_path / f"cam{suffix}")
    assert mode(path) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_aoti_package_honours_the_umask(tmp_path, umask):
    """0o022 is the case mkstemp got wrong (0o600 instead of 0o644); no guard run (compiling
    is the slow part and the mode does not depend on it)."""
    umask(0o022)
    path = gv.export(cam(), example(), tmp_path / "cam.pt2", check=False)
    assert mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_fp16_rewrite_keeps_the_mode(tmp_path, umask):
    """An fp16 export writes the file twice (the guard's measurement goes back into the
    record); the second write must not change the mode either."""
    umask(0o027)
    path = gv.export(cam(), example(), tmp_path / "cam.onnx", precision="fp16")
    assert mode(path) == 0o640


def test_triton_repository_honours_the_umask(tmp_path, umask):
    """`gradvis triton-repo` copies the artifact and writes its config: every file and folder
    as a normal one, even from an artifact that is itself 0o600."""
    from gradvis_export.apps.triton import write_repository

    umask(0o077)
    artifact = gv.export(cam(), example(), tmp_path / "cam.onnx")
    umask(0o022)
    folder = write_repository(artifact, tmp_path / "repo")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(folder).as_posix() for p in files) == [
        "1/model.onnx",
        "config.pbtxt",
        "gradvis.json",
    ]
    for p in files:
        assert mode(p) == 0o644, p
    for p in [folder, folder / "1"]:
        assert mode(p) == 0o755, p
