"""The artifact contract: what an exported artifact says about itself, in one typed, versioned
record (`ArtifactSpec`).

`gv.export` writes it through this type and every consumer reads it through this type: the
runtimes (Python here, C++ in `cpp/src/contract.cpp`, which parses the same fields), the video
job, `gradvis batch`, `gradvis info`, `gradvis triton-repo` and the export guard.  The record
rides in the artifact as JSON under the key `METADATA_KEY` (ONNX metadata_props, TorchScript
extra file `gradvis.json`, AOTInductor package metadata).  No torch here: the ONNX runtime path
runs without it.

An artifact whose record is missing, of a newer contract version, or malformed is refused with
a `ContractError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Version of the record's layout; a reader refuses records of a newer version.
CONTRACT_VERSION = 1
#: The key the record is stored under in every format.
METADATA_KEY = "gradvis"
#: Artifact formats, and the file suffixes that select them.
FORMATS = ("onnx", "torchscript", "aoti")
SUFFIXES = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "aoti",
}
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
#: Layouts of a data input: float planes (images, clips) or uint8 RGB frames as decoded.
LAYOUTS = ("BCHW", "BCTHW", "BHWC", "BTHWC")
#: "data": what the model sees; "target": what the explanation is about (class, mask, box...).
ROLES = ("data", "target")
PRECISIONS = ("fp32", "fp16")
PROFILES = ("tensorrt", "onnxruntime-cpu")
BATCH = "B"  # the symbolic batch dimension of every shape


class ContractError(ValueError):
    """An artifact's contract is missing, newer than this reader, or has a malformed field."""


def _fix_for(where: str) -> str:
    return f"{where}: " if where else ""


@dataclass(frozen=True)
class InputSpec:
    """One graph input.  `shape[0]` is "B" (any batch); `layout` is set for image / clip data
    inputs; `default` is what a runtime fills in for a target input left out (None: required)."""

    name: str
    role: str
    dtype: str
    shape: tuple[int | str, ...]
    layout: str | None = None
    default: float | int | None = None
    doc: str = ""

    @property
    def uint8(self) -> bool:
        """Takes uint8 RGB frames as a decoder gives them (normalised inside the graph)."""
        return self.layout in ("BHWC", "BTHWC")

    @property
    def is_video(self) -> bool:
        return self.layout in ("BCTHW", "BTHWC")

    @property
    def clip_len(self) -> int | None:
        """Frames per clip of a video input (None for images and non-image inputs)."""
        if self.layout == "BCTHW":
            return int(self.shape[2])
        if self.layout == "BTHWC":
            return int(self.shape[1])
        return None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the frames of an image / clip input."""
        if self.layout in ("BCHW", "BCTHW"):
            return int(self.shape[-2]), int(self.shape[-1])
        if self.layout in ("BHWC", "BTHWC"):
            return int(self.shape[-3]), int(self.shape[-2])
        return None


@dataclass(frozen=True)
class OutputSpec:
    """One graph output: its name, dtype, shape ("B" first) and what it holds."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    meaning: str = ""


@dataclass(frozen=True)
class Preprocess:
    """How frames become the model's input.  A uint8 artifact (`in_graph`) scales to [0, 1]
    and normalises with mean / std itself; a float artifact expects the caller to do it, with
    mean / std when given (None: the model takes [0, 1] values)."""

    in_graph: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    overlay_alpha: float | None = None  # uint8 artifacts that also return `overlay`


@dataclass(frozen=True)
class ArtifactSpec:
    """The contract of one artifact.  See the module docstring."""

    format: str
    method: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    map_input: str = "input"  # the data input the maps are given on
    layers: tuple[str, ...] = ()  # the target layer(s); none for guided backprop
    target: Mapping[str, Any] = field(default_factory=lambda: {"type": "ClassTarget"})
    preprocess: Preprocess = Preprocess()
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None  # valid targets: -1 (argmax) and 0..num_classes-1
    precision: str = "fp32"
    profile: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the method's own settings
    extra: Mapping[str, Any] = field(default_factory=dict)  # user fields, measurements
    gradvis_version: str = ""
    contract: int = CONTRACT_VERSION

    # ---------------------------------------------------------------- reading it

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def data_inputs(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.role == "data"]

    @property
    def target_inputs(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.role == "target"]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"this artifact has no input {name!r}; its inputs are "
                       f"{', '.join(self.input_names)}")  # fmt: skip

    @property
    def map_spec(self) -> InputSpec:
        """The data input the maps are given on (the only one, unless multi-input)."""
        return self.input(self.map_input)

    @property
    def layout(self) -> str | None:
        return self.map_spec.layout

    @property
    def is_video(self) -> bool:
        return self.map_spec.is_video

    @property
    def uint8(self) -> bool:
        return self.map_spec.uint8

    @property
    def clip_len(self) -> int | None:
        return self.map_spec.clip_len

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self.map_spec.frame_size

    def replace(self, **changes: Any) -> ArtifactSpec:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- wire format

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in the artifact (every field, always present)."""
        return {
            "contract": self.contract,
            "gradvis_version": self.gradvis_version,
            "format": self.format,
            "method": self.method,
            "layers": list(self.layers),
            "target": dict(self.target),
            "inputs": [
                {
                    "name": s.name,
                    "role": s.role,
                    "dtype": s.dtype,
                    "shape": list(s.shape),
                    "layout": s.layout,
                    "default": s.default,
                    "doc": s.doc,
                }
                for s in self.inputs
            ],
            "outputs": [
                {"name": o.name, "dtype": o.dtype, "shape": list(o.shape), "meaning": o.meaning}
                for o in self.outputs
            ],
            "map_input": self.map_input,
            "preprocess": {
                "in_graph": self.preprocess.in_graph,
                "mean": None if self.preprocess.mean is None else list(self.preprocess.mean),
                "std": None if self.preprocess.std is None else list(self.preprocess.std),
                "overlay_alpha": self.preprocess.overlay_alpha,
            },
            "class_names": None if self.class_names is None else list(self.class_names),
            "num_classes": self.num_classes,
            "precision": self.precision,
            "profile": self.profile,
            "options": dict(self.options),
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | None, where: str = "") -> ArtifactSpec:
        """Parse and check a stored record; `where` (the file) prefixes every error."""
        if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
            raise ContractError(
                f"{_fix_for(where)}the artifact has no gradvis contract (no {METADATA_KEY!r} "
                "record): export it with gradvis_export (gv.export)"
            )
        try:
            value = json.loads(text)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise ContractError(
                f"{_fix_for(where)}the gradvis contract is not valid JSON ({error}); the file "
                "is damaged: export it again"
            ) from None
        return cls.from_dict(value, where)

    @classmethod
    def from_dict(cls, value: object, where: str = "") -> ArtifactSpec:
        return _Reader(where).spec(value)


class _Reader:
    """Checks a stored record field by field; the first problem is one ContractError."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str) -> ContractError:
        return ContractError(
            f"{_fix_for(self.where)}the gradvis contract's field {field_name!r} {problem}; "
            "export the artifact again with gradvis_export"
        )

    def get(self, record: Mapping, key: str, path: str, kinds: tuple, optional: bool = False):
        if key not in record:
            if optional:
                return None
            raise self.fail(path, "is missing")
        value = record[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in kinds:  # JSON true is not a number here
            raise self.fail(path, f"is {value!r}, not {_kind_names(kinds)}")
        if not isinstance(value, kinds):
            raise self.fail(path, f"is {_show(value)}, not {_kind_names(kinds)}")
        return value

    def choice(self, record: Mapping, key: str, path: str, choices: Sequence[str], optional=False):
        value = self.get(record, key, path, (str,), optional)
        if value is not None and value not in choices:
            raise self.fail(path, f"is {value!r}, not one of {', '.join(choices)}")
        return value

    def shape(self, value: object, path: str) -> tuple[int | str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"is {_show(value)}, not a list of sizes starting with 'B'")
        if value[0] != BATCH:
            raise self.fail(f"{path}[0]", f"is {_show(value[0])}, not 'B' (the batch)")
        for i, size in enumerate(value[1:], 1):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise self.fail(f"{path}[{i}]", f"is {_show(size)}, not a positive size")
        return tuple(value)

    def names(self, value: object, path: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, f"is {_show(value)}, not a list of names")
        return tuple(value)

    def floats(self, record: Mapping, key: str, path: str) -> tuple[float, ...] | None:
        value = self.get(record, key, path, (list,), optional=True)
        if value is None:
            return None
        if not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(path, f"is {_show(value)}, not a list of numbers")
        return tuple(float(v) for v in value)

    def spec(self, record: object) -> ArtifactSpec:
        if not isinstance(record, dict):
            raise self.fail("", f"record is {_show(record)}, not a JSON object")
        if "contract" not in record:
            version = record.get("gradvis_version")
            made = f"gradvis {version}" if isinstance(version, str) else "an older gradvis"
            raise ContractError(
                f"{_fix_for(self.where)}the artifact was exported by {made}, before artifact "
                f"contracts (no field 'contract'): export it again with this gradvis "
                f"(contract version {CONTRACT_VERSION})"
            )
        version = self.get(record, "contract", "contract", (int,))
        if version > CONTRACT_VERSION:
            raise ContractError(
                f"{_fix_for(self.where)}the artifact's contract version {version} (field "
                f"'contract') is newer than this runtime's ({CONTRACT_VERSION}): upgrade "
                "gradvis_runtime, or export the artifact with the gradvis that matches it"
            )
        if version < 1:
            raise self.fail("contract", f"is {version}, not a version (1 or more)")
        inputs = self.inputs(self.get(record, "inputs", "inputs", (list,)))
        outputs = self.outputs(self.get(record, "outputs", "outputs", (list,)))
        map_input = self.get(record, "map_input", "map_input", (str,))
        data = [s.name for s in inputs if s.role == "data"]
        if map_input not in data:
            raise self.fail("map_input", f"is {map_input!r}, not a data input ({', '.join(data)})")
        pre = self.get(record, "preprocess", "preprocess", (dict,))
        preprocess = Preprocess(
            in_graph=self.get(pre, "in_graph", "preprocess.in_graph", (bool,)),
            mean=self.floats(pre, "mean", "preprocess.mean"),
            std=self.floats(pre, "std", "preprocess.std"),
            overlay_alpha=self.get(
                pre, "overlay_alpha", "preprocess.overlay_alpha", (int, float), optional=True
            ),  # fmt: skip
        )
        if (preprocess.mean is None) != (preprocess.std is None):
            raise self.fail("preprocess.std", "must be given with preprocess.mean")
        num_classes = self.get(record, "num_classes", "num_classes", (int,), optional=True)
        if num_classes is not None and num_classes < 1:
            raise self.fail("num_classes", f"is {num_classes}, not a positive count")
        names = record.get("class_names")
        class_names = None if names is None else self.names(names, "class_names")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise self.fail(
                "class_names", f"has {len(class_names)} names for {num_classes} classes"
            )
        target = self.get(record, "target", "target", (dict,))
        if not isinstance(target.get("type"), str):
            raise self.fail("target.type", f"is {_show(target.get('type'))}, not a target name")
        return ArtifactSpec(
            contract=version,
            gradvis_version=self.get(record, "gradvis_version", "gradvis_version", (str,)),
            format=self.choice(record, "format", "format", FORMATS),
            method=self.get(record, "method", "method", (str,)),
            layers=self.names(self.get(record, "layers", "layers", (list,)), "layers"),
            target=target,
            inputs=inputs,
            outputs=outputs,
            map_input=map_input,
            preprocess=preprocess,
            class_names=class_names,
            num_classes=num_classes,
            precision=self.choice(record, "precision", "precision", PRECISIONS),
            profile=self.choice(record, "profile", "profile", PROFILES, optional=True),
            options=self.get(record, "options", "options", (dict,)),
            extra=self.get(record, "extra", "extra", (dict,)),
        )

    def inputs(self, items: list) -> tuple[InputSpec, ...]:
        specs = []
        for i, item in enumerate(items):
            path = f"inputs[{i}]"
            if not isinstance(item, dict):
                raise self.fail(path, f"is {_show(item)}, not an object")
            role = self.choice(item, "role", f"{path}.role", ROLES)
            layout = self.choice(item, "layout", f"{path}.layout", LAYOUTS, optional=True)
            shape = self.shape(item.get("shape"), f"{path}.shape")
            dtype = self.choice(item, "dtype", f"{path}.dtype", DTYPES)
            if layout is not None:
                rank = len(layout)
                if len(shape) != rank:
                    raise self.fail(
                        f"{path}.shape",
                        f"has rank {len(shape)}, but layout {layout} is rank {rank}",
                    )
                uint8 = layout.endswith("C")
                if uint8 != (dtype == "uint8"):
                    raise self.fail(
                        f"{path}.dtype",
                        f"is {dtype}, but layout {layout} takes "
                        f"{'uint8 frames' if uint8 else 'floating-point planes'}",
                    )
            default = self.get(item, "default", f"{path}.default", (int, float), optional=True)
            specs.append(
                InputSpec(
                    name=self.get(item, "name", f"{path}.name", (str,)),
                    role=role,
                    dtype=dtype,
                    shape=shape,
                    layout=layout,
                    default=default,
                    doc=self.get(item, "doc", f"{path}.doc", (str,), optional=True) or "",
                )
            )
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise self.fail("inputs", f"names {names} are not unique")
        if not any(s.role == "data" for s in specs):
            raise self.fail("inputs", "has no data input (role 'data')")
        return tuple(specs)

    def outputs(self, items: list) -> tuple[OutputSpec, ...]:
        specs = []
        for i, item in enumerate(items):
            path = f"outputs[{i}]"
            if not isinstance(item, dict):
                raise self.fail(path, f"is {_show(item)}, not an object")
            specs.append(
                OutputSpec(
                    name=self.get(item, "name", f"{path}.name", (str,)),
                    dtype=self.choice(item, "dtype", f"{path}.dtype", DTYPES),
                    shape=self.shape(item.get("shape"), f"{path}.shape"),
                    meaning=self.get(item, "meaning", f"{path}.meaning", (str,), optional=True)
                    or "",
                )
            )
        if not specs:
            raise self.fail("outputs", "is empty")
        return tuple(specs)


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_names(kinds: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", bool: "true / false"}  # fmt: skip
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def format_of_suffix(path: str) -> str | None:
    """The artifact format a file name's suffix selects (None: not an artifact suffix)."""
    dot = path.rfind(".")
    slash = max(path.rfind("/"), path.rfind("\\"))
    return SUFFIXES.get(path[dot:].lower()) if dot > slash else None
