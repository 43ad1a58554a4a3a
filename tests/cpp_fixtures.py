"""Write the C++ test's fixtures: TorchScript and AOTInductor artifacts of tests/runtime_cases.py
and eager reference outputs on fresh inputs at batch 1 and 3, listed in manifest.txt (format in
cpp/tests/test_explainer.cpp); the ONNX artifacts' in manifest_onnx.txt (for a library built
with ONNX Runtime).

    python tests/cpp_fixtures.py OUT_DIR [--cases net2d,x3d]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", default="net2d,x3d")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["GRADVIS_ARTIFACT_DIR"] = str(args.out.resolve())
    import runtime_cases as rc

    lines: dict[str, list[str]] = {"manifest.txt": [], "manifest_onnx.txt": []}
    for case in args.cases.split(","):
        for fmt in ("torchscript", "aoti", "onnx"):
            manifest = lines["manifest_onnx.txt" if fmt == "onnx" else "manifest.txt"]
            start = time.perf_counter()
            path = rc.artifact(case, fmt)
            print(f"{path.name}: {time.perf_counter() - start:.1f} s", flush=True)
            for batch, seed in ((1, 11), (3, 12)):
                x, target = rc.sample(case, batch, seed)
                want = rc.eager(case, x, target)
                stem = f"{case}_{fmt}_b{batch}"
                manifest.append(f"run {path.name}")
                x.tofile(args.out / f"{stem}_input.bin")
                target.tofile(args.out / f"{stem}_target.bin")
                manifest.append(
                    f"input input {stem}_input.bin float32 {' '.join(map(str, x.shape))}"
                )
                manifest.append(f"input target {stem}_target.bin int64 {batch}")
                for name, value in want.items():
                    value.astype("float32").tofile(args.out / f"{stem}_{name}.bin")
                    dims = " ".join(map(str, value.shape))
                    manifest.append(f"output {name} {stem}_{name}.bin {dims}")
    for name, manifest in lines.items():
        (args.out / name).write_text("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
