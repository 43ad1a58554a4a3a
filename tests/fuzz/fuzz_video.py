"""Coverage-guided fuzzing (atheris) of what parses video bytes: `probe`, `read_frames` and
the video job's frame conversions (`decode_frames` to yuv420p planes and the small RGB frame).

Every input is written to a file and decoded; the only exception allowed out is `VideoError`
(the documented "not a video / damaged / no frames" error).  Anything else, a crash or a hang
(libFuzzer's -timeout) fails the run.  The seed corpus is a few tiny valid videos made here.

    python tests/fuzz/fuzz_video.py -max_total_time=60 -timeout=20      # what CI runs, shorter
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris
import av  # noqa: F401 - imported (uninstrumented) before the code under test
import numpy  # noqa: F401
import torch  # noqa: F401

# coverage feedback from our own modules only (instrumenting torch would take minutes)
with atheris.instrument_imports(include=["gradvis_export"]):
    from gradvis_export.apps.video.decode import (
        decode_frames,
        probe,
        read_frames,
        resized_rgb24,
        yuv420,
    )
    from gradvis_export.errors import VideoError

SCRATCH = Path(tempfile.mkdtemp(prefix="gradvis-fuzz-"))
TARGET = SCRATCH / "input.mp4"


def seed_corpus(folder: Path) -> None:
    """Tiny valid videos in a few containers and codecs (libFuzzer mutates from these)."""
    import numpy as np

    for name, codec, pix_fmt in (
        ("a.mp4", "libx264", "yuv420p"),
        ("b.mkv", "ffv1", "yuv444p"),
        ("c.avi", "mjpeg", "yuvj420p"),
    ):
        with av.open(str(folder / name), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 16, 16, pix_fmt
            for i in range(3):
                rgb = np.full((16, 16, 3), 40 * i, np.uint8)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def test_one_input(data: bytes) -> None:
    TARGET.write_bytes(data)
    try:
        probe(TARGET)
        for index, frame in enumerate(read_frames(TARGET)):
            assert frame.ndim == 3 and frame.shape[2] == 3, frame.shape
            if index >= 30:  # a mutated header may claim a long video; 30 frames prove decoding
                break

        # the video job's conversions: yuv420p planes to render on, the model's small RGB frame
        def convert(frame):
            return yuv420(frame), resized_rgb24(frame, 8)

        for index, (planes, small) in enumerate(decode_frames(TARGET, convert)):
            assert planes.ndim == 2 and planes.shape[0] % 3 == 0, planes.shape
            assert small.shape == (8, 8, 3), small.shape
            if index >= 30:
                break
    except VideoError:
        pass


def main() -> None:
    args = [arg for arg in sys.argv if not arg.startswith("--corpus=")]
    corpus = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--corpus=")), None)
    folder = Path(corpus) if corpus else SCRATCH / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        seed_corpus(folder)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup([*args, str(folder)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
