"""The user's own model through the main job: image models on video (every frame, eager and
artifacts), `--model` for any network, class names end to end, `--resize`, the drawn label.

References are written here: the crop and the letterbox computed by the test from the decoded
frames, eager explainers run on them, maps compared with the pixels of the output video.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_video import pattern as smooth_frame
from torch import nn
from videos import decode, encode

import gradvis_export as gv
from gradvis_export.apps import cli
from gradvis_export.apps.video.backends import ArtifactBackend
from gradvis_export.apps.video.pipeline import VideoOptions, explain_video
from gradvis_export.core.preprocess import UInt8Input

HOT_RGB = np.array([0.5, 0.0, 0.0]) * 255.0  # colormap(1)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NAMES = ["road", "car", "sign", "sky"]

FACTORY = """
import torch
from torch import nn


def tiny(num_classes=4):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    ).eval()


def not_a_model():
    return 42


class TwoHeads(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x.amax((2, 3))


def two_heads():
    return TwoHeads().eval()
"""


def tiny_cnn(num_classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, num_classes),
    ).eval()  # fmt: skip


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """test_video's smooth frame with a moving bright square, so a model's maps differ per
    frame."""
    frame = smooth_frame(index, width, height)
    x = (index * 3) % max(width - 12, 1)
    frame[height // 3 : height // 3 + 12, x : x + 12] = 250
    return frame


def odd_video(path: Path, frames: int = 97, width: int = 101, height: int = 75) -> Path:
    """Lossless (FFV1) so the test's own decode sees exactly the job's frames."""
    images = (pattern(i, width, height) for i in range(frames))
    return encode(path, images, width, height, codec="ffv1", pix_fmt="yuv444p")


def crop_frames(path: Path, size: int) -> np.ndarray:
    """The standard evaluation transform, written here: shorter side to `size` (area
    averaging), the centre `size` x `size` cut out."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            scale = size / min(frame.width, frame.height)
            w, h = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
            image = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
            x, y = (w - size) // 2, (h - size) // 2
            out.append(image.to_ndarray()[y : y + size, x : x + size])
    return np.stack(out)


class Recording:
    """Wraps a backend; keeps every batch it was given and what it answered."""

    def __init__(self, backend):
        self.backend, self.inputs, self.outputs = backend, [], []

    def __call__(self, batch, target):
        out = self.backend(batch, target)
        self.inputs.append(batch.copy())
        self.outputs.append({k: np.asarray(v).copy() for k, v in out.items()})
        return out


@pytest.fixture(scope="module")
def video_97(tmp_path_factory) -> Path:
    return odd_video(tmp_path_factory.mktemp("v") / "odd.mkv")


@pytest.fixture(scope="module", params=["uint8", "float"])
def image_artifact(request, tmp_path_factory):
    model = tiny_cnn()
    eager = gv.GradCAM(model, "4")
    if request.param == "uint8":
        explainer = UInt8Input(eager, mean=MEAN, std=STD)
        example = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
        metadata = None
    else:
        explainer, example = eager, torch.randn(2, 3, 32, 32)
        metadata = {"mean": list(MEAN), "std": list(STD)}
    path = tmp_path_factory.mktemp("art") / f"image_{request.param}.onnx"
    if metadata is None:  # the names as gv.export's own argument, or inside metadata=
        gv.export(explainer, example, path, class_names=NAMES)
    else:
        gv.export(explainer, example, path, metadata={**metadata, "class_names": NAMES})
    return request.param, path, eager


# ----------------------------------------------------------------------------- image models


@pytest.mark.parametrize("batch", [8, 5])
def test_image_artifact_explains_every_frame_like_eager(image_artifact, video_97, tmp_path, batch):
    kind, path, eager = image_artifact
    backend = ArtifactBackend(path)
    assert backend.per_frame and backend.uint8_input == (kind == "uint8")
    recording = Recording(backend)
    spec = backend.spec
    options = VideoOptions(
        clip_len=batch, stride=batch, size=32, per_frame=True, uint8_input=spec.uint8,
        mean=spec.preprocess.mean or MEAN, std=spec.preprocess.std or STD,
        labels=list(spec.class_names),
    )  # fmt: skip
    side = tmp_path / "o.json"
    summary = explain_video(video_97, recording, options, out=tmp_path / "o.mp4", sidecar=side,
                            progress=False)  # fmt: skip
    assert summary.frames == 97
    assert decode(tmp_path / "o.mp4").shape == (97, 76, 102, 3)  # H.264: even sizes
    # every call is a batch of `batch` frames; the last one aligned to the end
    starts = list(range(0, 97 - batch + 1, batch))
    if starts[-1] + batch < 97:
        starts.append(97 - batch)
    assert len(recording.inputs) == len(starts)
    frames = crop_frames(video_97, 32)
    heat = {}
    with torch.no_grad():
        for start, given, answer in zip(starts, recording.inputs, recording.outputs):
            want = frames[start : start + batch]
            x = torch.from_numpy(want).permute(0, 3, 1, 2).float() / 255.0
            x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
            if kind == "uint8":
                np.testing.assert_array_equal(given, want)
            else:
                np.testing.assert_allclose(given, x.numpy(), rtol=1e-5, atol=1e-5)
            logits, maps = eager(x, -1)
            np.testing.assert_allclose(answer["logits"], logits.numpy(), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(answer["heatmap"], maps.numpy(), rtol=1e-4, atol=1e-4)
            for i in range(batch):
                heat.setdefault(start + i, logits[i].numpy())
    data = json.loads(side.read_text())
    assert data["per_frame"] is True and data["batch"] == batch and data["resize"] == "crop"
    assert [f["frame"] for f in data["frames"]] == list(range(97))
    for entry in data["frames"]:
        logits = heat[entry["frame"]]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert entry["class"] == int(p.argmax())
        assert entry["label"] == NAMES[entry["class"]]
        assert entry["score"] == pytest.approx(float(p.max()), abs=1e-5)


def test_eager_image_model_from_a_factory_file(video_97, tmp_path, capsys):
    factory = tmp_path / "my_model.py"
    factory.write_text(FACTORY)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "o.mp4"
    code = cli.main(
        ["explain", str(video_97), "--model", f"{factory}:tiny", "--size", "32", "--labels",
         str(labels), "--out", str(out), "--quiet", "--batch", "16"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["model"] == f"{factory}:tiny" and data["per_frame"] is True
    # the reference: the same factory's model, eager Grad-CAM on the test's own crop
    namespace: dict = {}
    exec(FACTORY, namespace)
    model = namespace["tiny"]()
    x = torch.from_numpy(crop_frames(video_97, 32)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1).numpy()
    for entry in data["frames"]:
        assert entry["label"] == NAMES[int(p[entry["frame"]].argmax())]
        assert entry["score"] == pytest.approx(float(p[entry["frame"]].max()), abs=1e-4)


def test_torchvision_model_with_checkpoint_and_labels(tmp_path, capsys):
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "l.txt").write_text("\n".join(NAMES))
    video = odd_video(tmp_path / "v.mkv", frames=6, width=96, height=64)
    out = tmp_path / "o.mp4"
    code = cli.main(
        ["explain", str(video), "--model", "torchvision:resnet18", "--checkpoint",
         str(tmp_path / "sd.pt"), "--labels", str(tmp_path / "l.txt"), "--size", "64",
         "--out", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "random weights" not in err  # a checkpoint was given
    data = json.loads(out.with_suffix(".json").read_text())
    x = torch.from_numpy(crop_frames(video, 64)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1).numpy()
    assert [f["label"] for f in data["frames"]] == [NAMES[int(q.argmax())] for q in p]
    # the same model exported from the command line carries the names into the contract
    art = tmp_path / "r18.onnx"
    code = cli.main(
        ["export", "--model", "torchvision:resnet18", "--checkpoint", str(tmp_path / "sd.pt"),
         "--labels", str(tmp_path / "l.txt"), "--size", "64", "--uint8", "--out", str(art)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert gvr_spec(art).class_names == tuple(NAMES)
    assert cli.main(["info", str(art)]) == 0
    text = capsys.readouterr().out
    assert "classes: road, car, sign, sky" in text and "BHWC" in text


def gvr_spec(path):
    import gradvis_runtime

    return gradvis_runtime.load(path).spec


# ----------------------------------------------------------------------------- resize modes


class ConstantMap:
    """An image backend: the same map for every frame, fixed logits."""

    def __init__(self, heat: np.ndarray):
        self.heat = heat.astype(np.float32)

    def __call__(self, batch, target):
        n = batch.shape[0]
        return {
            "logits": np.tile(np.array([[0.0, 2.0, 0.1, -1.0]], np.float32), (n, 1)),
            "heatmap": np.broadcast_to(self.heat, (n, *self.heat.shape)).copy(),
        }


def _overlaid(tmp_path, video, heat, resize):
    out = tmp_path / f"{resize}.mp4"
    options = VideoOptions(clip_len=4, stride=4, size=32, per_frame=True, resize=resize,
                           alpha=1.0, label=False)  # fmt: skip
    explain_video(video, ConstantMap(heat), options, out=out, sidecar=out.with_suffix(".json"),
                  progress=False)  # fmt: skip
    return decode(out).astype(np.float64), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("resize", ["crop", "pad", "squash"])
def test_resize_mode_draws_heat_only_where_the_model_looked(tmp_path, resize):
    """A 160x80 video, a model of 32 px and a map hot everywhere: crop sees the centre 80x80
    (x 40..120) only; pad and squash see the whole frame."""
    video = encode(tmp_path / "v.mp4", (pattern(i, 160, 80) for i in range(4)), 160, 80)
    src = decode(video).astype(np.float64)
    got, data = _overlaid(tmp_path, video, np.ones((32, 32)), resize)
    hot = lambda region: np.abs(got[region] - HOT_RGB).mean()  # noqa: E731
    same = lambda region: np.abs(got[region] - src[region]).mean()  # noqa: E731
    inside = np.s_[:, 4:76, 46:114]
    assert hot(inside) < 8
    if resize == "crop":
        assert data["model_region"] == [40, 0, 120, 80]
        assert same(np.s_[:, :, :36]) < 4 and same(np.s_[:, :, 124:]) < 4  # never hot
    else:
        assert data["model_region"] == [0, 0, 160, 80]
        assert hot(np.s_[:, 4:76, 4:36]) < 8 and hot(np.s_[:, 4:76, 124:156]) < 8


def test_pad_heat_on_the_letterbox_bars_is_not_drawn(tmp_path):
    """pad: the 160x80 frame is 32x16 inside the model's 32x32, bars of 8 rows above and
    below; a map hot only on the bars draws nothing, one hot only on the picture covers it."""
    video = encode(tmp_path / "v.mp4", (pattern(i, 160, 80) for i in range(4)), 160, 80)
    src = decode(video).astype(np.float64)
    bars = np.zeros((32, 32))
    bars[:8], bars[24:] = 1.0, 1.0
    got, data = _overlaid(tmp_path, video, bars, "pad")
    assert data["scaled"] == [32, 16]
    assert np.abs(got - src).mean() < 3
    got, _ = _overlaid(tmp_path, video, 1.0 - bars, "pad")
    assert np.abs(got[:, 6:74, 6:154] - HOT_RGB).mean() < 8


def test_label_is_drawn_top_left_and_nowhere_else(tmp_path):
    video = encode(tmp_path / "v.mp4", (pattern(i, 160, 96) for i in range(4)), 160, 96)
    runs = {}
    for label in (False, True):
        out = tmp_path / f"{label}.mp4"
        options = VideoOptions(clip_len=4, stride=4, size=32, per_frame=True, label=label,
                               labels=NAMES, alpha=0.0)  # fmt: skip
        explain_video(video, ConstantMap(np.zeros((32, 32))), options, out=out, progress=False)
        runs[label] = decode(out).astype(np.float64)
    diff = np.abs(runs[True] - runs[False]).max(axis=(0, 3))
    assert diff[:20, :60].max() > 100  # "car 0.73": white on black, top-left
    assert diff[30:, :].max() < 12 and diff[:, 90:].max() < 12  # codec noise elsewhere


# ----------------------------------------------------------------------------- bad values


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(FACTORY)
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "nothere.py:fn"], "no file 'nothere.py'"),
        (["--model", "{factory}:tinny"], "has no 'tinny'; did you mean tiny"),
        (["--model", "{factory}:not_a_model"], "returned int, not a torch.nn.Module"),
        (["--model", "no_such_package_xyz.models:fn"], "cannot import 'no_such_package_xyz"),
        (["--model", "torchvision:resnet181"], "did you mean resnet18"),
        (["--model", "{factory}:two_heads"], "returns tuple, not (batch, classes) logits"),
        (["--model", "{factory}:tiny", "--labels", "{labels3}"], "has 3 names but the model has 4"),
        (["--model", "{factory}:tiny", "--labels", "missing.txt"], "no such file"),
        (["--model", "torchvision:resnet18", "--checkpoint", "{bad_sd}", "--size", "32"],
         "missing ['conv1.weight'"),
        (["--model", "{factory}:tiny", "--mean", "0.5", "0.5", "0.5"], "--mean and --std go"),
    ],
)  # fmt: skip
def test_bad_model_values_are_one_line_and_exit_2(factory, tmp_path, capsys, args, message):
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "bad.pt")
    names = {"factory": factory, "labels3": tmp_path / "three.txt", "bad_sd": tmp_path / "bad.pt"}
    video = odd_video(tmp_path / "v.mkv", frames=2, width=32, height=32)
    argv = ["explain", str(video), "--out", str(tmp_path / "o.mp4"), "--quiet"]
    argv += [a.format(**names) for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("gradvis: error: ")
    assert message in err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "option", [["--clip-len", "0"], ["--size", "-3"], ["--batch", "0"], ["--alpha", "1.5"]]
)
def test_nonsense_numbers_are_refused_by_the_parser(tmp_path, capsys, option):
    assert cli.main(["explain", "v.mp4", *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option[0] in err[0] and "gradvis explain --help" in err[0]


def test_shipped_model_on_a_user_video_says_what_it_knows(tmp_path, capsys):
    video = odd_video(tmp_path / "mine.mkv", frames=6, width=48, height=48)
    assert cli.main(["explain", str(video), "--out", str(tmp_path / "o.mp4")]) == 0
    err = capsys.readouterr().err
    assert "knows only generated car-light scenes" in err and "--model torchvision:" in err


# ----------------------------------------------------------------------------- detection, segmentation


def _detector_artifact(tmp_path):
    from test_targets import TinyDetector

    torch.manual_seed(0)
    model = TinyDetector().eval()
    eager = gv.GradCAM(model, "backbone.5", target=gv.DetectionTarget())
    x = torch.rand(2, 3, 64, 64)
    path = gv.export(
        eager, x, tmp_path / "det.onnx", metadata={"mean": [0.0] * 3, "std": [1.0] * 3}
    )
    return model, eager, path


def test_detection_artifact_per_frame_with_boxes_in_frame_pixels(tmp_path, capsys):
    """96x64 frames, a 64 px detector: crop keeps x 16..80, so a box at x in the frame is at
    x - 16 in the model's input. Frame 0-2 get their own boxes from --targets, the rest --box."""
    model, eager, path = _detector_artifact(tmp_path)
    video = odd_video(tmp_path / "v.mkv", frames=10, width=96, height=64)
    frames = crop_frames(video, 64)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        predicted, _ = model(x)
    # boxes near a prediction of each frame (in model pixels), as the user would draw them
    model_boxes = predicted[torch.arange(10), torch.arange(10) * 5 % 64] + 0.5
    frame_boxes = model_boxes + torch.tensor([16.0, 0.0, 16.0, 0.0])
    lines = [json.dumps({"frame": i, "box": frame_boxes[i].tolist(), "label": i % 3})
             for i in range(3)]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    fixed = frame_boxes[5].tolist()
    out = tmp_path / "o.mp4"
    code = cli.main(
        ["explain", str(video), "--artifact", str(path), "--box", *map(str, fixed), "--targets",
         str(tmp_path / "t.jsonl"), "--out", str(out), "--quiet", "--batch", "4"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["frames"]) == 10
    for entry in data["frames"]:
        i = entry["frame"]
        want = frame_boxes[i] if i < 3 else frame_boxes[5]
        assert entry["inputs"]["box"] == pytest.approx(want.tolist(), abs=1e-4)
        assert entry["class"] is None and entry["score"] is None  # a detector: no class scores
    # the maps against eager Grad-CAM on the test's crop with the boxes moved by the test
    from gradvis_export.apps.video.targets import frame_targets

    backend = Recording(ArtifactBackend(path))
    names = backend.backend.target_names
    assert set(names) == {"box", "label"}
    targets = frame_targets(names, None, 96, 64, box=fixed, targets_file=tmp_path / "t.jsonl")
    options = VideoOptions(clip_len=4, stride=4, size=64, per_frame=True, targets=targets,
                           mean=(0.0,) * 3, std=(1.0,) * 3)  # fmt: skip
    explain_video(video, backend, options, sidecar=tmp_path / "o2.json", progress=False)
    boxes = torch.stack([model_boxes[i] if i < 3 else model_boxes[5] for i in range(10)])
    labels = torch.tensor([i % 3 if i < 3 else -1 for i in range(10)])
    _, _, want = eager(x, box=boxes, label=labels)
    assert want.abs().amax(dim=(1, 2)).min() > 0, "a zero map: the boxes overlap nothing"
    got = np.concatenate([o["heatmap"] for o in backend.outputs])
    starts = [0, 4, 6]  # batches of 4 frames, the last aligned to the end
    for start, o in zip(starts, backend.outputs):
        np.testing.assert_allclose(o["heatmap"], want[start : start + 4].numpy(), atol=1e-4)
    assert got.shape == (12, 64, 64)


class TinySegmenter(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())  # fmt: skip
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return {"out": self.head(self.body(x))}


def test_segmentation_artifact_per_frame_with_a_mask_image(tmp_path, capsys):
    from PIL import Image

    model = TinySegmenter().eval()
    eager = gv.GradCAM(model, "body.2", target=gv.SegmentationTarget())
    path = gv.export(UInt8Input(eager, mean=MEAN, std=STD),
                     torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8),
                     tmp_path / "seg.onnx")  # fmt: skip
    video = odd_video(tmp_path / "v.mkv", frames=5, width=48, height=32)
    mask = np.zeros((32, 48), np.uint8)
    mask[4:20, 10:30] = 255  # frame pixels; the crop keeps x 8..40
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "o.mp4"
    code = cli.main(
        ["explain", str(video), "--artifact", str(path), "--mask", str(tmp_path / "mask.png"),
         "--target", "2", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    assert all(f["inputs"] == {"target": 2, "mask": True} for f in data["frames"])
    from gradvis_export.apps.video.targets import frame_targets

    backend = Recording(ArtifactBackend(path))
    targets = frame_targets(backend.backend.target_names, backend.backend.mask_shape, 48, 32,
                            target=2, mask=tmp_path / "mask.png")  # fmt: skip
    options = VideoOptions(clip_len=5, stride=5, size=32, per_frame=True, targets=targets,
                           uint8_input=True)  # fmt: skip
    explain_video(video, backend, options, sidecar=tmp_path / "o2.json", progress=False)
    frames = torch.from_numpy(crop_frames(video, 32))
    want_mask = torch.from_numpy(mask[:, 8:40] > 0).float().expand(5, 32, 32)
    _, want = eager(UInt8Input(eager, mean=MEAN, std=STD).preprocess(frames), torch.full((5,), 2),
                    mask=want_mask)  # fmt: skip
    np.testing.assert_allclose(backend.outputs[0]["heatmap"], want.numpy(), atol=1e-4)
    # a mask outside the crop changes the map: the mask really reached the artifact
    _, full = eager(UInt8Input(eager, mean=MEAN, std=STD).preprocess(frames), torch.full((5,), 2))
    assert np.abs(full.numpy() - want.numpy()).max() > 1e-3


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "needs a box"),
        (["--box", "5", "5", "1", "9"], "x1<x2"),
        (["--box", "1", "1", "9", "9", "--mask", "m.png"], "takes no mask"),
        (["--box", "1", "1", "9", "9", "--targets", "nothere.jsonl"], "no such file"),
    ],
)
def test_detection_target_options_are_checked(tmp_path, capsys, extra, message):
    _, _, path = _detector_artifact(tmp_path)
    video = odd_video(tmp_path / "v.mkv", frames=2, width=64, height=64)
    argv = ["explain", str(video), "--artifact", str(path), "--out", str(tmp_path / "o.mp4")]
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "o.mp4").exists()


def test_batch_refuses_a_detection_artifact_with_the_fix(tmp_path, capsys):
    _, _, path = _detector_artifact(tmp_path)
    video = odd_video(tmp_path / "v.mkv", frames=2, width=64, height=64)
    code = cli.main(["batch", "--input", str(video), "--artifact", str(path), "--out",
                     str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs box" in err and "--box X1 Y1 X2 Y2" in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "x3d_xs"], "--model: the artifact"),
        (["--method", "guided"], "--method: the artifact"),
        (["--size", "48"], "takes 32x32; drop --size"),
        (["--clip-len", "3"], "is an image model"),
        (["--stride", "2"], "--stride is for video models"),
        (["--labels", "{three}"], "has 3 names but the artifact has 4 classes"),
    ],
)
def test_artifact_options_it_fixed_are_refused(image_artifact, tmp_path, capsys, extra, message):
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    _, path, _ = image_artifact
    video = odd_video(tmp_path / "v.mkv", frames=2, width=32, height=32)
    argv = ["explain", str(video), "--artifact", str(path), "--out", str(tmp_path / "o.mp4")]
    assert cli.main(argv + [a.format(three=tmp_path / "three.txt") for a in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_eager_torchvision_segmenter_per_frame_with_a_mask(tmp_path, capsys):
    """`--model torchvision:lraspp_mobilenet_v3_large --checkpoint ... --mask`: the class summed
    over the mask, per frame, against eager Grad-CAM with gv.SegmentationTarget on the test's
    crop of the frames and of the mask."""
    import torchvision
    from PIL import Image

    from gradvis_export.apps.sources import ModelSpec, load_model
    from gradvis_export.apps.video.backends import EagerBackend
    from gradvis_export.apps.video.targets import frame_targets

    torch.manual_seed(2)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    ).eval()
    torch.save(model.state_dict(), tmp_path / "seg.pt")
    video = odd_video(tmp_path / "v.mkv", frames=4, width=96, height=64)
    mask = np.zeros((64, 96), np.uint8)
    mask[30:, 20:70] = 255  # the lower middle; the crop keeps x 16..80
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["--model", "torchvision:lraspp_mobilenet_v3_large", "--checkpoint",
            str(tmp_path / "seg.pt"), "--num-classes", "3", "--size", "64"]  # fmt: skip
    out = tmp_path / "o.mp4"
    code = cli.main(["explain", str(video), *args, "--mask", str(tmp_path / "mask.png"),
                     "--target", "1", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    assert [f["inputs"] for f in data["frames"]] == [{"target": 1, "mask": True}] * 4
    # the maps the job computed, against the reference on the test's own crop
    loaded = load_model(ModelSpec("torchvision:lraspp_mobilenet_v3_large",
                                  checkpoint=tmp_path / "seg.pt", num_classes=3, size=64))  # fmt: skip
    assert loaded.task == "segmentation" and loaded.output_size == (64, 64)
    explainer = cli.explainer_for(loaded, "gradcam")
    backend = Recording(EagerBackend(explainer))
    targets = frame_targets(("target", "mask"), loaded.output_size, 96, 64, target=1,
                            mask=tmp_path / "mask.png")  # fmt: skip
    options = VideoOptions(clip_len=4, stride=4, size=64, per_frame=True, targets=targets,
                           mean=MEAN, std=STD)  # fmt: skip
    explain_video(video, backend, options, sidecar=tmp_path / "o2.json", progress=False)
    x = torch.from_numpy(crop_frames(video, 64)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    layer = explainer.target_layers[0]
    reference = gv.GradCAM(model, layer, target=gv.SegmentationTarget("out"))
    want_mask = torch.from_numpy(mask[:, 16:80] > 0).float().expand(4, 64, 64)
    want = reference(x, torch.full((4,), 1), mask=want_mask).heatmap
    assert want.amax() > 0
    np.testing.assert_allclose(backend.outputs[0]["heatmap"], want.numpy(), atol=1e-4)
