"""The C++ build's contracts: the README's C++ example is the file CI compiles, a machine
without CMake still installs the Python packages, backend="cpp" without the extension says
how to build it, and an installed library is found by another project's
`find_package(gradvis)`."""

from __future__ import annotations

import os
import re
import shutil
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


def test_find_package_from_an_install_prefix(tmp_path):
    """`cmake --install` of the build pip made, then a separate project (tests/cpp_consumer)
    configured with only CMAKE_PREFIX_PATH: it finds gradvis, compiles the README's usage
    example against the installed header, links, and runs it on a .pt2 fixture (7 classes,
    32x32 input: logits [2, 7], heatmap [2, 32, 32])."""
    import runtime_cases as rc

    build = ROOT / "build" / "cpp"
    assert (build / "cmake_install.cmake").is_file(), "no C++ build: pip install builds it"
    cmake = shutil.which("cmake")
    prefix, consumer = tmp_path / "prefix", tmp_path / "consumer"

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)}:\n{(done.stdout + done.stderr)[-3000:]}"

    run(cmake, "--install", str(build), "--prefix", str(prefix))
    assert (prefix / "include" / "gradvis" / "gradvis.h").is_file()
    run(
        cmake,
        "-S",
        str(ROOT / "tests" / "cpp_consumer"),
        "-B",
        str(consumer),
        f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DGRADVIS_CONSUMER_SOURCE={ROOT / 'cpp' / 'examples' / 'usage.cpp'}",
        "-DCMAKE_BUILD_TYPE=Release",
    )
    cache = (consumer / "CMakeCache.txt").read_text()
    assert f"gradvis_DIR:PATH={prefix}" in cache  # the install, not the build tree
    run(cmake, "--build", str(consumer), "-j", "2")
    done = subprocess.run(
        [str(consumer / "consumer"), str(rc.artifact("net2d", "aoti"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[2, 7] [2, 32, 32]"


def test_onnxruntime_sdk_takes_the_archive_from_the_apt_sources(tmp_path):
    """cpp/onnxruntime_sdk.py names no archive itself: it reads apt's sources (one-line and
    deb822 formats), skipping the security archive, disabled stanzas and other components."""
    import onnxruntime_sdk

    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://security.invalid/debian-security x-security main\n"
        "deb-src http://src.invalid/debian x main\n"
    )
    (apt / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: x\nComponents: main\nEnabled: no\n\n"
        "Types: deb\nURIs: http://contrib.invalid/debian\nSuites: x\nComponents: contrib\n\n"
        "Types: deb\n# a comment line\nURIs: http://archive.invalid/debian/\nSuites: x x-updates\n"
        "Components: main\n"
    )
    assert onnxruntime_sdk.archive_from_apt(apt) == "http://archive.invalid/debian"
    (apt / "sources.list.d" / "a.sources").unlink()
    (apt / "sources.list.d" / "b.list").write_text("deb http://plain.invalid/debian x main\n")
    assert onnxruntime_sdk.archive_from_apt(apt) == "http://plain.invalid/debian"
    (apt / "sources.list.d" / "b.list").unlink()
    import pytest

    with pytest.raises(SystemExit, match="pass --archive URL"):
        onnxruntime_sdk.archive_from_apt(apt)
