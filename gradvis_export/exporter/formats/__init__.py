"""Artifact formats: one module per format owns writing its file (with the contract record
inside), opening it again for the guard, and rewriting the record.  `FORMATS` is the table
`gv.export` picks from; a new format is a new module here and one entry in that table."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import fx

from gradvis_runtime import ArtifactSpec, Explainer
from gradvis_runtime.contract import FORMATS as FORMAT_NAMES
from gradvis_runtime.contract import format_of_suffix


class Written(Protocol):
    """A written artifact that can take a revised contract record (what the guard measured)
    from what it holds in memory."""

    def rewrite(self, spec: ArtifactSpec) -> None: ...


class Format(Protocol):
    """What a format module provides (see `formats.onnx` for the fullest one)."""

    name: str

    def write(
        self,
        gm: fx.GraphModule,
        args: tuple[torch.Tensor, ...],
        spec: ArtifactSpec,
        path: Path,
        opset: int,
    ) -> Written: ...

    def load(self, path: Path) -> Explainer: ...

    def runtime_name(self) -> str: ...


def formats() -> dict[str, Format]:
    """name -> format module (imported on first use)."""
    from gradvis_export.exporter.formats import aoti, onnx, torchscript

    return {"onnx": onnx, "torchscript": torchscript, "aoti": aoti}


def format_for(path: Path, format: str | None) -> Format:
    """The format `format` names, else the one the suffix of `path` selects."""
    if format is not None:
        fmt = format.lower()
        if fmt not in FORMAT_NAMES:
            raise ValueError(
                f"unknown export format {format!r}; choose 'onnx', 'torchscript' or 'aoti'"
            )
        if fmt == "aoti" and path.suffix.lower() != ".pt2":
            raise ValueError(
                f"an AOTInductor package must end in .pt2, got {str(path)!r}; rename it"
            )
        return formats()[fmt]
    fmt = format_of_suffix(str(path))
    if fmt is None:
        raise ValueError(
            f"cannot tell the export format from the suffix of {str(path)!r}; use .onnx or .pt "
            "(.pt2 for AOTInductor), or pass format='onnx' / 'torchscript' / 'aoti'"
        )
    return formats()[fmt]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and deprecation warnings."""
    names = ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def dynamic_program(gm: fx.GraphModule, args: tuple[torch.Tensor, ...]):
    """`torch.export` of the traced graph with a dynamic batch on every input."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(
        gm, args, dynamic_shapes=tuple({0: batch} for _ in args), strict=False
    )


def guard_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
