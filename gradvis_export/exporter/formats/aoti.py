"""AOTInductor packages (.pt2): `aoti_compile_and_package` of the exported graph (tens of
seconds on 2 cores; tied to this CPU's ISA and torch version), the contract in the package's
metadata map (`AOTIModelPackageLoader::get_metadata()["gradvis"]` in C++)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch
from torch import fx

import gradvis_runtime
from gradvis_export.exporter.formats import dynamic_program, quiet
from gradvis_runtime import ArtifactSpec, Explainer
from gradvis_runtime.contract import METADATA_KEY

name = "aoti"


class WrittenPackage:
    """A compiled package: its record lives in the package's `*_metadata.json`, which a
    rewrite replaces member by member (compiling again would take tens of seconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rewrite(self, spec: ArtifactSpec) -> None:
        rewritten = self.path.with_name(self.path.name + ".meta")
        try:
            with zipfile.ZipFile(self.path) as src, zipfile.ZipFile(rewritten, "w") as dst:
                for info in src.infolist():
                    data = src.read(info)
                    if info.filename.endswith("_metadata.json"):
                        entries = json.loads(data)
                        if METADATA_KEY in entries:
                            entries[METADATA_KEY] = spec.to_json()
                            data = json.dumps(entries).encode()
                    dst.writestr(info, data)
            os.replace(rewritten, self.path)
        finally:
            if rewritten.exists():
                rewritten.unlink()


def write(
    gm: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    spec: ArtifactSpec,
    path: Path,
    opset: int,
) -> WrittenPackage:
    with quiet():
        program = dynamic_program(gm, args)
        torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(path),
            inductor_configs={"aot_inductor.metadata": {METADATA_KEY: spec.to_json()}},
        )
    return WrittenPackage(path)


def load(path: Path) -> Explainer:
    """The package through torch's loader, as the guard runs it (just written: trusted)."""
    with quiet():
        return gradvis_runtime.load(path, backend="aoti", trust=True)


def runtime_name() -> str:
    return f"AOTInductor, torch {torch.__version__}, CPU"
