"""setup.py's build of the C++ runtime: CMake builds the library, the example programs, the
CTest test and the pybind11 bridge `gradvis_runtime._cpp` against the installed torch.

Optional but attempted: without CMake, a compiler or an importable torch (e.g. under pip's build
isolation: install with `--no-build-isolation`), the build prints why and the pure-Python
package installs; `gradvis_runtime.load(path, backend="cpp")` then says the extension is
missing.  GRADVIS_REQUIRE_CPP=1 makes a failed build an error; GRADVIS_CPP_BUILD_DIR moves the
CMake tree (default build/cpp, where .ci/run runs ctest); GRADVIS_CPP_JOBS sets the parallel jobs;
GRADVIS_ONNXRUNTIME_ROOT (an ONNX Runtime SDK folder, see cpp/onnxruntime_sdk.py) adds the
library's ONNX backend.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Extension
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent.parent


#: the command that builds the C++ runtime (or stops with the build's error)
BUILD_CPP = "GRADVIS_REQUIRE_CPP=1 pip install --no-build-isolation -e ."
#: the controlling terminal: pip captures a build's stdout and stderr and shows them only with
#: -v or on failure (no pip release forwards a backend's warnings), so a skipped build is also
#: told here, where pip cannot hide it
TTY = "/dev/tty"


def tell_terminal(line: str) -> None:
    """Under pip (which sets PIP_BUILD_TRACKER, PIP_REQ_TRACKER before pip 22.1, for its build
    subprocesses), write one line to the terminal it runs in; elsewhere (`setup.py` run
    directly, tests) stderr is seen anyway, and without a terminal (CI, a container build)
    nothing happens: pip -v and pip's log still have the stderr line."""
    under_pip = os.environ.get("PIP_BUILD_TRACKER") or os.environ.get("PIP_REQ_TRACKER")
    if not under_pip or sys.stderr.isatty():
        return
    try:
        with open(TTY, "w") as terminal:
            terminal.write("\n" + line + "\n")  # off the line of pip's spinner
    except OSError:
        pass


class CMakeExtension(Extension):
    """An extension whose sources CMake compiles (setuptools compiles none)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self) -> None:
        for ext in self.extensions:
            try:
                self.build_extension(ext)
            except Exception as error:  # optional: report and install the Python parts
                if os.environ.get("GRADVIS_REQUIRE_CPP") == "1":
                    raise
                print(
                    f"WARNING: gradvis: the C++ runtime was not built ({error}); "
                    "gradvis_runtime works without it except backend='cpp'; "
                    f"to build it: {BUILD_CPP}",
                    file=sys.stderr,
                )
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                tell_terminal(
                    f"WARNING: gradvis: the C++ runtime was not built ({first}); "
                    f"to build it: {BUILD_CPP}"
                )

    def build_extension(self, ext: Extension) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("cmake not found (apt-get install cmake g++)")
        build_dir = Path(os.environ.get("GRADVIS_CPP_BUILD_DIR", ROOT / "build" / "cpp"))
        build_dir.mkdir(parents=True, exist_ok=True)
        log = build_dir / "build.log"
        configure = [cmake, "-S", str(ROOT), "-B", str(build_dir), "-DGRADVIS_BUILD_PYTHON=ON"]
        configure += [f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"]
        sdk = os.environ.get("GRADVIS_ONNXRUNTIME_ROOT")
        if sdk:
            configure.append(f"-DONNXRUNTIME_ROOT={Path(sdk).resolve()}")
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("GRADVIS_CPP_JOBS", str(max(1, min(2, os.cpu_count() or 1))))
        start = time.perf_counter()
        with open(log, "w") as out:
            for command in (configure, [cmake, "--build", str(build_dir), "-j", jobs]):
                if subprocess.call(command, stdout=out, stderr=subprocess.STDOUT) != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
                    raise RuntimeError(
                        f"`{' '.join(command[:2])} ...` failed; see {log}:\n" + "\n".join(tail)
                    )
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        built = next(build_dir.glob("_cpp*" + target.suffix))
        shutil.copy2(built, target)
        shutil.copy2(build_dir / "libgradvis.so", target.parent / "libgradvis.so")
        print(
            f"gradvis: built the C++ runtime in {time.perf_counter() - start:.0f} s ({build_dir})",
            file=sys.stderr,
        )
