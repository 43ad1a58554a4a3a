"""The artifact contract (`gradvis_runtime.ArtifactSpec`): the record round-trips, and an
artifact whose record is missing, of a newer version or malformed is refused by every runtime
(onnxruntime, TorchScript, AOTInductor, the C++ library) with one line naming the field and
the fix.  The C++ library's own test of the same files is cpp/tests/test_explainer.cpp."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract_damage
import runtime_cases as rc

import gradvis_runtime
from gradvis_runtime import ArtifactSpec, ContractError
from gradvis_runtime.contract import CONTRACT_VERSION

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

RUNS = rc.RUNS


def record(fmt: str = "onnx") -> dict:
    return gradvis_runtime.load(rc.artifact("net2d", fmt), trust=True).spec.to_dict()


def test_record_round_trips_and_is_complete():
    original = record()
    spec = ArtifactSpec.from_dict(original)
    assert spec.to_dict() == original
    assert ArtifactSpec.from_json(json.dumps(original)) == spec
    assert set(original) == set(ArtifactSpec.__dataclass_fields__)  # every field is written
    assert spec.contract == CONTRACT_VERSION
    assert spec.map_spec.layout == "BCHW" and spec.frame_size == (32, 32)
    assert spec.clip_len is None and not spec.uint8


def refusal(value: object) -> str:
    with pytest.raises(ContractError) as caught:
        ArtifactSpec.from_dict(value, where="a.onnx")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("a.onnx: "), message
    return message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("method"), "'method' is missing"),
        (lambda r: r.update(format="tflite"), "'format' is 'tflite', not one of onnx"),
        (lambda r: r["inputs"][0].update(dtype="float33"), "'inputs[0].dtype' is 'float33'"),
        (lambda r: r["inputs"][0].update(role="image"), "'inputs[0].role' is 'image'"),
        (lambda r: r["inputs"][0].update(shape=[2, 3, 32, 32]), "'inputs[0].shape[0]' is 2"),
        (lambda r: r["inputs"][0].update(shape=["B", 3, 0, 32]), "'inputs[0].shape[2]' is 0"),
        (lambda r: r["inputs"][0].update(layout="BTHWC"), "'inputs[0].shape' has rank 4"),
        (lambda r: r["inputs"][0].update(layout="BHWC"), "'inputs[0].dtype' is float32, but"),
        (lambda r: r["inputs"][1].update(default="x"), "'inputs[1].default' is 'x'"),
        (lambda r: r["inputs"][1].update(name="input"), "'inputs' names"),
        (lambda r: r["inputs"][0].update(role="target"), "'inputs' has no data input"),
        (lambda r: r.update(outputs=[]), "'outputs' is empty"),
        (lambda r: r["outputs"][0].pop("dtype"), "'outputs[0].dtype' is missing"),
        (lambda r: r.update(map_input="target"), "'map_input' is 'target', not a data input"),
        (lambda r: r.update(precision="int8"), "'precision' is 'int8'"),
        (lambda r: r.update(profile="coreml"), "'profile' is 'coreml'"),
        (lambda r: r.update(class_names=["a"]), "'class_names' has 1 names for 7 classes"),
        (lambda r: r.update(num_classes=True), "'num_classes' is True"),
        (lambda r: r["preprocess"].update(mean=[0.5]), "'preprocess.std' must be given"),
        (lambda r: r.update(contract="1"), "'contract' is '1', not an integer"),
        (lambda r: r.update(target={}), "'target.type'"),
    ],
)
def test_malformed_field_is_named(change, field):
    bad = record()
    change(bad)
    message = refusal(bad)
    assert f"field {field}" in message and "export the artifact again" in message


def test_missing_older_and_newer_records():
    with pytest.raises(ContractError, match="no gradvis contract.*gv.export"):
        ArtifactSpec.from_json("", where="a.onnx")
    old = {k: v for k, v in record().items() if k != "contract"}
    old["gradvis_version"] = "0.1.0"
    assert "exported by gradvis 0.1.0, before artifact contracts" in refusal(old)
    newer = {**record(), "contract": CONTRACT_VERSION + 1}
    message = refusal(newer)
    assert f"version {CONTRACT_VERSION + 1} (field 'contract') is newer than this" in message
    assert "upgrade gradvis_runtime" in message
    with pytest.raises(ContractError, match="not valid JSON.*export it again"):
        ArtifactSpec.from_json("{", where="a.onnx")


@pytest.mark.parametrize("kind", list(contract_damage.DAMAGES))
@pytest.mark.parametrize(("fmt", "backend"), RUNS)
def test_every_runtime_refuses_a_damaged_contract(tmp_path, kind, fmt, backend):
    if backend == "cpp" and fmt == "onnx":
        rc.require_cpp_onnx()
    source = rc.artifact("net2d", fmt)
    path = contract_damage.damaged_copy(source, tmp_path / f"bad{source.suffix}", kind)
    _, field = contract_damage.DAMAGES[kind]
    with pytest.raises(ContractError) as caught:
        gradvis_runtime.load(path, backend=backend, trust=True)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    if kind == "missing":
        assert "no gradvis contract" in message and "gv.export" in message
    else:
        assert f"'{field}'" in message and "export" in message, message
    # the sound artifact it was copied from loads
    gradvis_runtime.load(source, backend=backend, trust=True)
