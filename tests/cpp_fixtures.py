"""Write the C++ test's fixtures: TorchScript and AOTInductor artifacts of tests/runtime_cases.py
and eager reference outputs on fresh inputs at batch 1 and 3, listed in manifest.txt (format in
cpp/tests/test_explainer.cpp); the ONNX artifacts' in manifest_onnx.txt (for a library built
with ONNX Runtime).  Plus artifacts whose contract is missing, newer or malformed, each with
the field its refusal must name, in contract.txt (`refuse FILE FIELD`).

    python tests/cpp_fixtures.py OUT_DIR [--cases net2d,x3d,twopath]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_cases(out: Path, cases: list[str]) -> None:
    import runtime_cases as rc

    import gradvis_runtime

    lines: dict[str, list[str]] = {"manifest.txt": [], "manifest_onnx.txt": []}
    for case in cases:
        for fmt in ("torchscript", "aoti", "onnx"):
            manifest = lines["manifest_onnx.txt" if fmt == "onnx" else "manifest.txt"]
            start = time.perf_counter()
            path = rc.artifact(case, fmt)
            print(f"{path.name}: {time.perf_counter() - start:.1f} s", flush=True)
            names = [s.name for s in gradvis_runtime.load(path, trust=True).spec.data_inputs]
            for batch, seed in ((1, 11), (3, 12)):
                x, target = rc.sample(case, batch, seed)
                want = rc.eager(case, x, target)
                stem = f"{case}_{fmt}_b{batch}"
                manifest.append(f"run {path.name}")
                for name, value in zip(names, x if isinstance(x, list) else [x]):
                    value.tofile(out / f"{stem}_{name}.bin")
                    dims = " ".join(map(str, value.shape))
                    manifest.append(f"input {name} {stem}_{name}.bin float32 {dims}")
                target.tofile(out / f"{stem}_target.bin")
                manifest.append(f"input target {stem}_target.bin int64 {batch}")
                for name, value in want.items():
                    value.astype("float32").tofile(out / f"{stem}_{name}.bin")
                    dims = " ".join(map(str, value.shape))
                    manifest.append(f"output {name} {stem}_{name}.bin {dims}")
    for name, manifest in lines.items():
        (out / name).write_text("\n".join(manifest) + "\n")


def write_contract_cases(out: Path) -> None:
    """net2d's artifacts with a damaged contract; contract_damage.DAMAGES says how."""
    import contract_damage
    import runtime_cases as rc

    lines = []
    for fmt in ("torchscript", "aoti", "onnx"):
        for kind, (_change, field) in contract_damage.DAMAGES.items():
            path = out / f"net2d_contract_{kind}{rc.SUFFIX[fmt]}"
            contract_damage.damaged_copy(rc.artifact("net2d", fmt), path, kind)
            lines.append(f"refuse {path.name} {field}")
    (out / "contract.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", default="net2d,x3d,twopath")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["GRADVIS_ARTIFACT_DIR"] = str(args.out.resolve())
    write_cases(args.out, args.cases.split(","))
    write_contract_cases(args.out)


if __name__ == "__main__":
    main()
