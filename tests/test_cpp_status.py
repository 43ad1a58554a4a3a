"""A skipped C++ build is visible: `pip install` skips a C++ runtime it cannot build and pip
hides that at its default verbosity, so the runtime says so where the C++ runtime is asked for
(`backend="cpp"`, `gradvis_runtime.cpp_status()` for `gradvis info`), naming the command that
builds it; the build itself also writes its one line to the terminal pip runs in.

The missing or broken extension is simulated by an import hook, never by touching the build.
"""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

import pytest
from runtime_cases import require_cpp_option

import gradvis_runtime

ROOT = Path(__file__).resolve().parent.parent
BUILD = "GRADVIS_REQUIRE_CPP=1 pip install --no-build-isolation -e ."
NAME = "gradvis_runtime._cpp"


class Refuse(importlib.abc.MetaPathFinder):
    """Imports of the extension fail as a missing file (ModuleNotFoundError) or as a library
    that does not load (ImportError, e.g. built for another torch)."""

    def __init__(self, error: ImportError) -> None:
        self.error = error

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name == NAME:
            raise self.error
        return None


@pytest.fixture
def no_extension(monkeypatch):
    def install(error: ImportError) -> None:
        monkeypatch.delitem(sys.modules, NAME, raising=False)
        monkeypatch.setattr(sys, "meta_path", [Refuse(error), *sys.meta_path])

    return install


def test_missing_extension_says_it_was_not_built_and_how_to_build(tmp_path, no_extension):
    no_extension(ModuleNotFoundError(f"No module named {NAME!r}", name=NAME))
    status = gradvis_runtime.cpp_status()
    assert "\n" not in status
    assert status.startswith("C++ runtime: not available")
    assert "was not built" in status and f"`{BUILD}`" in status
    artifact = tmp_path / "any.onnx"
    artifact.write_bytes(b"")  # refused before the file is read
    with pytest.raises(ImportError) as raised:
        gradvis_runtime.load(artifact, backend="cpp")
    message = str(raised.value)
    assert "needs the compiled extension gradvis_runtime._cpp" in message
    assert "was not built" in message and f"`{BUILD}`" in message


def test_extension_that_does_not_load_says_rebuild(no_extension):
    no_extension(ImportError("libc10.so: undefined symbol: _ZN3c104impl"))
    status = gradvis_runtime.cpp_status()
    assert "cannot be loaded (libc10.so: undefined symbol: _ZN3c104impl)" in status
    assert "rebuild it against this torch" in status and f"`{BUILD}`" in status


def test_status_of_a_built_extension():
    try:
        import torch  # noqa: F401 - the extension links to libtorch

        from gradvis_runtime import _cpp
    except ImportError as error:
        # skipped only on a machine without the C++ build; .ci/run builds it and sets
        # GRADVIS_REQUIRE_CPP_OPTIONS=1, where a missing build fails this test
        require_cpp_option(False, f"the C++ runtime was not built ({error}): {BUILD}")
    status = gradvis_runtime.cpp_status()
    onnx = "with" if _cpp.has_onnxruntime else "without"
    assert status == f"C++ runtime: built (gradvis {_cpp.version}, {onnx} its ONNX Runtime backend)"


def test_the_command_is_the_readmes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install --no-build-isolation -e ." in readme
    assert "GRADVIS_REQUIRE_CPP=1" in (ROOT / "cpp" / "cmake_build_ext.py").read_text()


@pytest.mark.parametrize("under_pip", [True, False])
def test_skipped_build_tells_the_terminal_under_pip(tmp_path, monkeypatch, capsys, under_pip):
    """pip captures the build's stderr; under pip (PIP_BUILD_TRACKER set) the one line also
    goes to the terminal (here a file standing in for /dev/tty); elsewhere only stderr."""
    sys.path.insert(0, str(ROOT / "cpp"))
    import cmake_build_ext
    from setuptools import Distribution

    tty = tmp_path / "tty"
    monkeypatch.setattr(cmake_build_ext, "TTY", str(tty))
    monkeypatch.setattr(cmake_build_ext.shutil, "which", lambda name: None)
    monkeypatch.delenv("GRADVIS_REQUIRE_CPP", raising=False)
    monkeypatch.delenv("PIP_REQ_TRACKER", raising=False)
    if under_pip:
        monkeypatch.setenv("PIP_BUILD_TRACKER", str(tmp_path / "tracker"))
    else:
        monkeypatch.delenv("PIP_BUILD_TRACKER", raising=False)
    command = cmake_build_ext.CMakeBuild(Distribution())
    command.extensions = [cmake_build_ext.CMakeExtension(NAME)]
    command.run()  # skipped, no exception
    err = capsys.readouterr().err
    assert "the C++ runtime was not built (cmake not found" in err and BUILD in err
    if under_pip:
        lines = tty.read_text().strip().splitlines()
        assert len(lines) == 1
        assert "the C++ runtime was not built (cmake not found" in lines[0]
        assert lines[0].endswith(f"to build it: {BUILD}")
    else:
        assert not tty.exists()
