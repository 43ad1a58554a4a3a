"""Copies of a sound artifact whose contract record is damaged one way each, for the contract
tests (tests/test_contract.py) and the C++ test's fixtures (tests/cpp_fixtures.py).  The
archive or graph stays intact: only the record changes, so a refusal can only come from the
contract check."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from gradvis_runtime.contract import CONTRACT_VERSION, METADATA_KEY

Record = dict | None


def _without(key: str) -> Callable[[dict], dict]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _newer(record: dict) -> dict:
    return {**record, "contract": CONTRACT_VERSION + 1}


def _bad_dtype(record: dict) -> dict:
    inputs = [dict(s) for s in record["inputs"]]
    inputs[0]["dtype"] = "float33"
    return {**record, "inputs": inputs}


def _bad_output_shape(record: dict) -> dict:
    outputs = [dict(s) for s in record["outputs"]]
    outputs[1]["shape"] = [3, *outputs[1]["shape"][1:]]
    return {**record, "outputs": outputs}


def _bad_layout(record: dict) -> dict:
    inputs = [dict(s) for s in record["inputs"]]
    inputs[0]["layout"] = "BCTHW"  # a 4-D input
    return {**record, "inputs": inputs}


#: kind -> (how the record changes (None: removed), the field the refusal names)
DAMAGES: dict[str, tuple[Callable[[dict], Record] | None, str]] = {
    "missing": (None, METADATA_KEY),
    "unversioned": (_without("contract"), "contract"),
    "newer": (_newer, "contract"),
    "dtype": (_bad_dtype, "inputs[0].dtype"),
    "outshape": (_bad_output_shape, "outputs[1].shape[0]"),
    "layout": (_bad_layout, "inputs[0].shape"),
    "nomethod": (_without("method"), "method"),
}


def _changed(text: str, kind: str) -> str | None:
    change, _ = DAMAGES[kind]
    if change is None:
        return None
    return json.dumps(change(json.loads(text)))


def _rezip(src: Path, dst: Path, member: Callable[[str, bytes], bytes | None]) -> None:
    """Copy the archive, each member through `member(name, data)` (None: left out)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = member(info.filename, old.read(info))
            if data is not None:
                new.writestr(info, data)


def damaged_copy(artifact: Path, dst: Path, kind: str) -> Path:
    """Write `artifact` to `dst` with its contract damaged as DAMAGES[kind] says."""
    suffix = artifact.suffix.lower()
    if suffix == ".onnx":
        import onnx

        model = onnx.load(str(artifact))
        for entry in list(model.metadata_props):
            if entry.key == METADATA_KEY:
                text = _changed(entry.value, kind)
                if text is None:
                    model.metadata_props.remove(entry)
                else:
                    entry.value = text
        onnx.save(model, str(dst))
    elif suffix == ".pt2":

        def package_member(name: str, data: bytes) -> bytes:
            if not name.endswith("_metadata.json"):
                return data
            entries = json.loads(data)
            if METADATA_KEY in entries:
                text = _changed(entries[METADATA_KEY], kind)
                if text is None:
                    del entries[METADATA_KEY]
                else:
                    entries[METADATA_KEY] = text
            return json.dumps(entries).encode()

        _rezip(artifact, dst, package_member)
    else:

        def script_member(name: str, data: bytes) -> bytes | None:
            if not name.endswith(f"extra/{METADATA_KEY}.json"):
                return data
            text = _changed(data.decode(), kind)
            return None if text is None else text.encode()

        _rezip(artifact, dst, script_member)
    return dst
