"""The embedded default: the car-light generator, training, and the shipped model's quality.

Every expectation is computed here from pixels, labels or plain autograd: lamp boxes are
checked against the pixels that change when lamps switch, accuracy against the generator's
labels, Grad-CAM's hottest pixel against the lamp boxes, and the randomisation check against
a rank correlation from scipy.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradvis_export as gv
from gradvis_export.apps import models, train
from gradvis_export.apps.datasets import CLASS_NAMES, make_batch, make_clip

STRONG = 100  # a pixel "changes" when a lamp switches if some channel moves by > 100/255


def inside(boxes: np.ndarray, height: int, width: int, grow: float = 1.0) -> np.ndarray:
    """(H, W) bool: pixel centres inside any of the (K, 4) boxes grown by `grow` pixels."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask |= (xs > x0 - grow) & (xs < x1 + grow) & (ys > y0 - grow) & (ys < y1 + grow)
    return mask


def test_generator_is_deterministic_and_seeded():
    a, b, c = make_clip(123), make_clip(123), make_clip(124)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (6, 112, 112, 3)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes, b.boxes)
    assert a.label == b.label
    assert not np.array_equal(a.frames, c.frames)
    video, labels, boxes = make_batch(range(40), frames=6, size=(64, 96))
    assert video.shape == (40, 6, 64, 96, 3) and labels.dtype == np.int64
    assert set(labels) == set(range(len(CLASS_NAMES)))  # every class is drawn
    assert all(b.shape[0] == 6 and b.shape[2] == 4 for b in boxes)
    with pytest.raises(ValueError, match="not a class"):
        make_clip(0, label=len(CLASS_NAMES))


@pytest.mark.parametrize("seed", [3, 11, 29])
@pytest.mark.parametrize("label", [1, 2, 3, 4])
def test_boxes_cover_the_lamps_that_switch(seed, label):
    """Against the same scene with every lamp off, the strongly changed pixels lie in the lamp
    boxes; the class's own lamps are lit (most of their box changes) in some frame and, for a
    blinker, dark in another one; boxes follow the camera shake."""
    kw = dict(noise=False, jitter=False, distractors=False)
    off, on = make_clip(seed, label=0, **kw), make_clip(seed, label=label, **kw)
    assert on.label == label and off.label == 0
    assert np.array_equal(off.boxes[:, :2], on.boxes[:, :2]) if label == 1 else True
    height, width = on.frames.shape[1:3]
    all_lamps, headlights = off.boxes[0], off.boxes[0][:2]
    changed = np.abs(on.frames.astype(int) - off.frames.astype(int)).max(-1) > STRONG
    lamp_area = inside(all_lamps, height, width)
    assert not (changed & ~lamp_area).any()  # nothing strong outside the lamps
    assert changed.any()
    lit = []  # per deciding box: share of its pixels that changed, per frame
    for k in range(on.boxes.shape[1]):
        box = inside(on.boxes[0, k : k + 1], height, width, grow=-1.0)
        lit.append(changed[:, box].mean(1))
    lit = np.array(lit)
    assert (lit.max(1) > 0.5).all()  # each deciding lamp is lit in some frame
    if label >= 2:  # a blink: dark in some frame; beyond the headlights, only these lamps
        assert (lit.min(1) < 0.05).all()
        rest = changed & ~inside(headlights, height, width) & ~inside(on.boxes[0], height, width)
        assert not rest.any()
    shaken = make_clip(seed, label=label)  # with camera shake the boxes move, by < 10 %
    moved = np.abs(shaken.boxes - shaken.boxes[:1]).max()
    assert 0 < moved < 0.1 * width


def test_spatial_strides_set_the_map_side_and_are_checked():
    """The shipped model's last stage at stride 1: blocks.4's map has twice the side of the
    stock X3D's (ceil(size / 16) instead of ceil(size / 32)); strides that do not fit are
    refused with the expected form."""
    x = torch.zeros(1, 3, 4, 80, 80)
    side = {}
    for strides in ((2, 2, 2, 2), (2, 2, 2, 1)):
        model = models.build("x3d_xs", 5, 4, 80, spatial_strides=strides)
        with torch.no_grad():
            assert model(x).shape == (1, 5)
            features = x
            for block in model.blocks[:5]:  # stem and the four stages, as Net.forward runs them
                features = block(features)
        side[strides] = tuple(features.shape[-2:])
    assert side == {(2, 2, 2, 2): (3, 3), (2, 2, 2, 1): (5, 5)}
    with pytest.raises(gv.InputError, match="four strides of 1 or 2"):
        models.build("x3d_xs", 5, 4, 80, spatial_strides=(2, 2, 3, 1))
    with pytest.raises(gv.InputError, match="X3D models only"):
        models.build("slow_r50", 5, 4, 64, spatial_strides=(2, 2, 2, 1))


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = models.build(train.MODEL, len(CLASS_NAMES), 4, 48).train()
    video, labels, _ = make_batch(range(500, 508), frames=4, size=48)
    x, y = train.to_input(video), torch.from_numpy(labels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_lamp_cells_mark_the_cells_a_box_overlaps():
    """Against a brute-force raster: a cell is marked when some of its pixels (at 8x the
    frame's resolution) lie inside a box of that frame."""
    rng = np.random.default_rng(0)
    size, side, fine = 80, (5, 5), 8
    boxes = []
    for _ in range(3):  # clips of 2 frames, 1-2 boxes each, some crossing cell borders
        k = int(rng.integers(1, 3))
        x0, y0 = rng.uniform(0, 70, (2, 2, k))
        w, h = rng.uniform(1, 20, (2, 2, k))
        boxes.append(np.stack([x0, y0, x0 + w, y0 + h], -1).astype(np.float32))
    cells = train.lamp_cells(boxes, side, size).numpy()
    ys, xs = (np.mgrid[0 : size * fine, 0 : size * fine] + 0.5) / fine
    for b, clip_boxes in enumerate(boxes):
        for t, frame_boxes in enumerate(clip_boxes):
            pixels = np.zeros(xs.shape, bool)
            for x0, y0, x1, y1 in frame_boxes:
                pixels |= (xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)
            block = pixels.reshape(side[0], size * fine // side[0], side[1], -1).any((1, 3))
            assert np.array_equal(cells[b, t] > 0, block), (b, t)


def _tiny_cam_net():
    """A small conv net cut at a (B, 6, 2, 5, 5) layer, an input batch, targets, lamp cells."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 6, 1)
    )
    head = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4)
    )
    x, target = torch.randn(3, 3, 2, 5, 5), torch.tensor([0, 2, 3])
    cells = (torch.rand(3, 2, 5, 5) < 0.3).float()
    return net, head, x, target, cells


def _autograd_cam(net, head, x, target, relu: bool = True) -> np.ndarray:
    """Grad-CAM (B, T, h, w) by plain autograd on a detached copy of the layer's output."""
    a = net(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(head(a).gather(1, target[:, None]).sum(), a)
    cam = (g.mean((2, 3, 4))[:, :, None, None, None] * a).sum(1).detach().numpy()
    return np.maximum(cam, 0) if relu else cam


def _optimise(loss_fn, net, head, x, target, cells, steps: int = 20) -> list[float]:
    optimiser = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.5)
    values = []
    for _ in range(steps):
        features = net(x)
        loss = loss_fn(features, head(features).gather(1, target[:, None]).sum(), cells)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        values.append(loss.item())
    return values


def test_energy_outside_is_the_gradcam_mass_outside_and_training_lowers_it():
    """The guidance term equals 1 - (Grad-CAM mass in the cells) / (mass), with Grad-CAM
    computed here by plain autograd; steps on it alone lower it."""
    net, head, x, target, cells = _tiny_cam_net()
    features = net(x)
    score = head(features).gather(1, target[:, None]).sum()
    value = train.energy_outside(features, score, cells)

    cam = _autograd_cam(net, head, x, target)
    inside, mass = (cam * cells.numpy()).sum((2, 3)), cam.sum((2, 3))
    share = np.divide(inside, mass, out=np.zeros_like(mass), where=mass > 0)
    expected = np.mean(1 - share)  # a frame without mass counts as all outside
    assert abs(value.item() - expected) < 1e-3, (value.item(), expected)  # eps 1e-6 of mass

    values = _optimise(train.energy_outside, net, head, x, target, cells)
    assert values[-1] < 0.7 * values[0], values


@pytest.mark.parametrize("before_relu", [True, False])
def test_pointing_loss_is_a_soft_pointing_game_and_training_wins_it(before_relu):
    """The pointing guidance equals -log(softmax mass on the lamp cells) of each frame's
    Grad-CAM map (before the ReLU, scaled to max |value| 1 / temperature, with one extra entry
    of 0; or after it, scaled to max 1, no extra entry), frames without a lamp cell left out,
    with Grad-CAM by plain autograd; steps on it alone move each frame's maximum onto its
    cells."""
    net, head, x, target, cells = _tiny_cam_net()
    cells[0, 1] = 0  # a frame whose lamp is out of view
    features = net(x)
    score = head(features).gather(1, target[:, None]).sum()
    loss = functools.partial(train.pointing_loss, before_relu=before_relu)
    value = loss(features, score, cells, temperature=0.2)

    cam = _autograd_cam(net, head, x, target, relu=not before_relu)
    cam = cam.reshape(3, 2, -1).astype(np.float64)
    mask = cells.numpy().reshape(3, 2, -1) > 0
    expected = []
    for b in range(3):
        for t in range(2):
            if not mask[b, t].any():
                continue
            z = cam[b, t] / (np.abs(cam[b, t]).max() + 1e-6) / 0.2
            z = np.append(z, 0.0) if before_relu else z  # the "no cell" entry
            p = (np.exp(z - z.max()) / np.exp(z - z.max()).sum())[: cam.shape[-1]]
            expected.append(-np.log(p[mask[b, t]].sum()))
    assert abs(value.item() - np.mean(expected)) < 1e-4, (value.item(), np.mean(expected))

    def hits() -> float:
        best = _autograd_cam(net, head, x, target).reshape(3, 2, -1).argmax(-1)
        return np.mean(
            [mask[b, t, best[b, t]] for b in range(3) for t in range(2) if mask[b, t].any()]
        )

    before = hits()
    values = _optimise(loss, net, head, x, target, cells, steps=60)
    assert values[-1] < 0.5 * values[0], values
    assert hits() == 1.0 > before, before


# --------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped():
    meta = models.shipped_meta("carlights")
    model = models.build("carlights")
    seeds = list(train.TEST_SEEDS)  # never used in training (train seeds start at 1e6)
    assert max(seeds) < train.TRAIN_SEED_BASE
    labels = [i % len(CLASS_NAMES) for i in range(len(seeds))]  # balanced
    video, labels, boxes = make_batch(seeds, meta["clip_len"], meta["size"], labels)
    return model, meta, video, labels, boxes


def test_shipped_assets_load_safely_and_fit_the_budget():
    path = models.SHIPPED["carlights"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta = state["meta"]
    assert meta["class_names"] == list(CLASS_NAMES) and meta["num_classes"] == len(CLASS_NAMES)
    assert meta["accuracy"] >= 0.95 and meta["model"] == "x3d_xs"
    assert models.SAMPLE_VIDEO.is_file()
    total = path.stat().st_size + models.SAMPLE_VIDEO.stat().st_size
    assert total <= 15e6, total
    # the loader stays strict: a checkpoint for another head is refused with the fix named
    with pytest.raises(gv.InputError, match="--num-classes"):
        models.build("x3d_xs", 7, meta["clip_len"], meta["size"], checkpoint=path)


def test_provenance_records_every_training_stage(tmp_path):
    """PROVENANCE.json is the checkpoint's meta; its stages form one chain from random init
    (each resumes at the step where the previous one stopped, the last is the checkpoint);
    PROVENANCE.md is rendered from it; a further `--resume` run appends its own stage."""
    import json
    import shutil

    path = models.SHIPPED["carlights"]
    meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    assert json.loads((path.parent / "PROVENANCE.json").read_text()) == meta
    stages = meta["stages"]
    assert stages[0]["resumed_at_step"] is None
    for before, after in zip(stages, stages[1:]):
        assert after["resumed_at_step"] == before["steps"] and after["steps"] > before["steps"]
    last = stages[-1]
    assert (last["steps"], last["accuracy"], last["pointing_game"], last["script"]) == (
        meta["steps"],
        meta["accuracy"],
        meta["pointing_game"],
        meta["script"],
    )
    for name in ("PROVENANCE.json", "SAMPLE.json"):
        shutil.copy(path.parent / name, tmp_path / name)
    train.write_provenance(tmp_path)
    shipped_md = (path.parent / "PROVENANCE.md").read_text()
    assert (tmp_path / "PROVENANCE.md").read_text() == shipped_md
    assert all(stage["script"] in shipped_md for stage in stages)

    out = tmp_path / "more" / "m.pt"
    args = ["--resume", str(path), "--first-step", str(meta["steps"]), "--steps", "1"]
    assert train.main([*args, "--batch", "2", "--note", "a test", "--out", str(out)]) == 0
    more = torch.load(out, weights_only=True)["meta"]
    assert more["stages"][:-1] == stages
    assert more["stages"][-1]["resumed_at_step"] == meta["steps"]
    assert more["stages"][-1]["steps"] == meta["steps"] + 1
    assert more["stages"][-1]["note"] == "; a test"
    assert "--note 'a test'" in more["stages"][-1]["script"]  # quoted as a shell would need


def test_shipped_model_accuracy_on_fresh_clips(shipped):
    model, meta, video, labels, _ = shipped
    with torch.no_grad():
        predicted = torch.cat([model(train.to_input(video[i : i + 25])) for i in (0, 25)])
    accuracy = float((predicted.argmax(1).numpy() == labels).mean())
    assert accuracy >= 0.95, accuracy


def pointing_game(heatmaps: np.ndarray, boxes: list[np.ndarray], tolerance: float) -> float:
    """Share of frames whose hottest pixel lies within `tolerance` px of a deciding lamp box."""
    hits = []
    for heat, clip_boxes in zip(heatmaps, boxes, strict=True):
        for t in range(heat.shape[0]):
            y, x = np.unravel_index(np.argmax(heat[t]), heat[t].shape)
            x0, y0, x1, y1 = clip_boxes[t].T
            dx = np.maximum(np.maximum(x0 - (x + 0.5), (x + 0.5) - x1), 0)
            dy = np.maximum(np.maximum(y0 - (y + 0.5), (y + 0.5) - y1), 0)
            hits.append(bool((np.hypot(dx, dy) <= tolerance).any()))
    return float(np.mean(hits))


def gradcam_maps(model, meta, video) -> np.ndarray:
    cam = gv.GradCAM(model, meta["layer"])
    maps = [cam(train.to_input(video[i : i + 10])).heatmap.detach() for i in range(0, 50, 10)]
    return torch.cat(maps).numpy()


def test_gradcam_points_at_the_lamps(shipped):
    model, meta, video, labels, boxes = shipped
    heat = gradcam_maps(model, meta, video)
    assert heat.shape == video.shape[:4]
    score = pointing_game(heat, boxes, tolerance=POINTING_TOLERANCE * meta["size"])
    assert score >= 0.8, score


def test_cascading_randomisation_changes_the_maps(shipped):
    """Adebayo et al.: re-initialise the weights from the head down; at full randomisation the
    map's rank correlation with the trained model's must be low."""
    from scipy.stats import spearmanr

    model, meta, video, _, _ = shipped
    clips = video[:10]
    original = gradcam_maps_n(model, meta, clips)
    random = models.build(
        "x3d_xs",
        meta["num_classes"],
        meta["clip_len"],
        meta["size"],
        seed=1,
        spatial_strides=tuple(meta["spatial_strides"]),
    )
    randomised = gradcam_maps_n(random, meta, clips)
    rho = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(original, randomised, strict=True)]
    rho = np.nan_to_num(np.asarray(rho))
    assert np.mean(np.abs(rho)) < 0.5, rho


def gradcam_maps_n(model, meta, video) -> np.ndarray:
    cam = gv.GradCAM(model, meta["layer"])
    return cam(train.to_input(video)).heatmap.detach().numpy()


POINTING_TOLERANCE = 1 / 16  # of the frame side (Zhang et al. use 15 px on ~224 px images)


def test_cli_default_explains_the_shipped_sample(tmp_path, monkeypatch):
    """`gradvis explain` with no arguments: the shipped sample, the shipped model, labelled
    frames; the sample goes through headlights, left, right, hazard, off (12 frames each)."""
    import json

    from gradvis_export.apps import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["explain", "--out", "lights.mp4", "--quiet"]) == 0
    sidecar = json.loads((tmp_path / "lights.json").read_text())
    assert sidecar["model"] == "carlights" and len(sidecar["frames"]) == 60
    order = [CLASS_NAMES[i] for i in train.SAMPLE_LABELS]
    middle = [f for f in sidecar["frames"] if f["frame"] % 12 in (5, 6)]  # inside a segment
    right = [f["label"] == order[f["frame"] // 12] for f in middle]
    assert np.mean(right) >= 0.8, [(f["frame"], f["label"]) for f in middle]
    assert (tmp_path / "lights.mp4").stat().st_size > 0
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["explain", "--num-classes", "x"])
    code = cli.main(["explain", "--num-classes", "7", "--out", "o.mp4", "--quiet"])
    assert code == 2 and not (tmp_path / "o.mp4").exists()
