"""The C++ build's contracts: the README's C++ example is the file CI compiles, a machine
without CMake still installs the Python packages, and backend="cpp" without the extension says
how to build it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cpp"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_readme_cpp_example_is_the_compiled_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```cpp\n(.*?)```", readme, flags=re.S)
    assert (ROOT / "cpp" / "examples" / "usage.cpp").read_text() in blocks


def test_build_without_cmake_warns_and_continues(monkeypatch, capsys):
    import cmake_build_ext
    from setuptools import Distribution

    monkeypatch.setattr(cmake_build_ext.shutil, "which", lambda name: None)
    monkeypatch.delenv("GRADVIS_REQUIRE_CPP", raising=False)
    command = cmake_build_ext.CMakeBuild(Distribution())
    command.extensions = [cmake_build_ext.CMakeExtension("gradvis_runtime._cpp")]
    command.run()  # no exception
    assert "cmake not found" in capsys.readouterr().err


def test_cpp_backend_without_extension_says_how_to_build(tmp_path):
    import runtime_cases as rc

    child = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "gradvis_runtime._cpp":
                    raise ImportError("blocked: no extension")
        sys.meta_path.insert(0, Block())
        import gradvis_runtime
        try:
            gradvis_runtime.load(sys.argv[1], backend="cpp")
        except ImportError as error:
            print(error)
        """
    )
    path = rc.artifact("net2d", "torchscript")
    result = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend='cpp' needs the compiled extension gradvis_runtime._cpp" in result.stdout
    assert "--no-build-isolation" in result.stdout
