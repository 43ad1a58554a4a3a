"""Car-light clips: a car seen from the front whose lamps say the class, with the lamps' boxes.

Every clip is a pure function of its seed (a numpy Generator): a road under a sky, a car body
with a cabin, two headlights and two amber indicators, random colours, position, scale, light
level, camera jitter, sensor noise and distractor lights elsewhere in the frame.  The class is
the state of the lamps over the clip:

    off            every lamp dark
    headlights     both headlights on, indicators dark
    left_blinker   the indicator on the image's left blinks (headlights random)
    right_blinker  the indicator on the image's right blinks (headlights random)
    hazard         both indicators blink together (headlights random)

A blink has a random period of 4-6 frames (on for half of it) and a random phase, so any
6 consecutive frames hold an "on" and an "off" frame.  `boxes` are, per frame, the pixel boxes
(x0, y0, x1, y1) of the lamps that decide the class (all four for "off"), where a faithful
explanation should point.  Drawing is vectorised over frames, with anti-aliased edges, so a
clip rendered at 2x and resized matches one rendered at 1x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("off", "headlights", "left_blinker", "right_blinker", "hazard")
LAMPS = ("left_headlight", "right_headlight", "left_indicator", "right_indicator")
#: the lamps (indices into LAMPS) whose state decides each class
DECIDING_LAMPS = {0: (0, 1, 2, 3), 1: (0, 1), 2: (2,), 3: (3,), 4: (2, 3)}
MIN_PERIOD, MAX_PERIOD = 4, 6  # blink period in frames

_HEADLIGHT_ON = np.array([1.0, 0.97, 0.86])
_INDICATOR_ON = np.array([1.0, 0.55, 0.04])
_DISTRACTOR_COLOURS = np.array(
    [[1.0, 1.0, 0.95], [1.0, 0.15, 0.1], [0.15, 1.0, 0.3], [0.25, 0.45, 1.0], [1.0, 0.55, 0.04]]
)


@dataclass
class CarClip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    boxes: np.ndarray  # (T, K, 4) float32 pixel boxes (x0, y0, x1, y1) of the deciding lamps
    label: int  # index into CLASS_NAMES
    lamps: np.ndarray  # (T, 4) bool, which of LAMPS is lit in each frame


@dataclass
class _Scene:
    """Everything about a clip that does not change over time (normalised coordinates)."""

    horizon: float
    sky: np.ndarray  # (2, 3) top and bottom colour
    road: np.ndarray  # (3,)
    light: float  # ambient light level (night .. day)
    body: np.ndarray  # (3,) car colour
    car: tuple[float, float, float, float]  # centre x, bottom y, width, height of the body
    lamp_boxes: np.ndarray  # (4, 4) x0, y0, x1, y1 of LAMPS
    lamp_off: np.ndarray  # (4, 3) colours of the dark lamps
    indicator: np.ndarray  # (3,) lit indicator colour
    distractors: np.ndarray  # (N, 6) x, y, radius, colour index, period (0 = steady), phase
    noise: float
    jitter: float


def _sample_scene(rng: np.random.Generator) -> _Scene:
    width = rng.uniform(0.6, 0.9)
    height = width * rng.uniform(0.35, 0.5)
    cx = rng.uniform(width / 2 + 0.03, 1 - width / 2 - 0.03)
    bottom = rng.uniform(0.72, 0.92)
    top = bottom - height
    ly = top + height * rng.uniform(0.3, 0.45)  # lamp row
    hw, hh = width * rng.uniform(0.07, 0.09), height * rng.uniform(0.09, 0.13)
    iw, ih = width * 0.045, height * rng.uniform(0.09, 0.12)
    hx, ix = width * 0.29, width * 0.435
    lamp_boxes = np.array(
        [
            [cx - hx - hw, ly - hh, cx - hx + hw, ly + hh],
            [cx + hx - hw, ly - hh, cx + hx + hw, ly + hh],
            [cx - ix - iw, ly - ih, cx - ix + iw, ly + ih],
            [cx + ix - iw, ly - ih, cx + ix + iw, ly + ih],
        ]
    )
    light = rng.uniform(0.3, 1.0)
    grey = rng.uniform(0.35, 0.6)
    lamp_off = np.array([[grey, grey, grey * 1.05]] * 2 + [[0.5, 0.32, 0.15]] * 2)
    lamp_off = lamp_off * rng.uniform(0.7, 1.1)
    # distractor lights outside the car (rejection sampling on a slightly grown car box)
    n = int(rng.integers(0, 4))
    distractors = []
    while len(distractors) < n:
        x, y, r = rng.uniform(0.03, 0.97), rng.uniform(0.03, 0.97), rng.uniform(0.015, 0.04)
        if (
            cx - width / 2 - r - 0.03 < x < cx + width / 2 + r + 0.03
            and y > top - 0.25 * height - r
        ):
            continue  # on the car or its cabin
        colour = int(rng.integers(len(_DISTRACTOR_COLOURS)))
        blinks = colour != 4 and rng.random() < 0.5  # amber lights elsewhere stay steady
        period = int(rng.integers(MIN_PERIOD, MAX_PERIOD + 1)) if blinks else 0
        distractors.append([x, y, r, colour, period, rng.integers(0, MAX_PERIOD)])
    return _Scene(
        horizon=rng.uniform(0.3, 0.5),
        sky=rng.uniform([0.2, 0.3, 0.5], [0.6, 0.75, 1.0], (2, 3)),
        road=rng.uniform(0.15, 0.4) + rng.uniform(-0.03, 0.03, 3),
        light=light,
        body=rng.uniform(0.05, 0.9, 3),
        car=(cx, bottom, width, height),
        lamp_boxes=lamp_boxes,
        lamp_off=lamp_off,
        indicator=_INDICATOR_ON + rng.uniform(-0.05, 0.05, 3) * [0, 1, 1],
        distractors=np.array(distractors, dtype=np.float64).reshape(-1, 6),
        noise=rng.uniform(0.0, 0.05),
        jitter=rng.uniform(0.0, 0.012),
    )


def _blink(rng: np.random.Generator, frames: int) -> np.ndarray:
    period = int(rng.integers(MIN_PERIOD, MAX_PERIOD + 1))
    phase = int(rng.integers(0, period))
    return (np.arange(frames) + phase) % period < period // 2


def _lamp_program(rng: np.random.Generator, label: int, frames: int) -> np.ndarray:
    """(T, 4) bool: which lamps are lit in each frame for class `label`."""
    lamps = np.zeros((frames, 4), dtype=bool)
    if label == 1:
        lamps[:, :2] = True
    elif label >= 2:
        lamps[:, :2] = rng.random() < 0.5
        blink = _blink(rng, frames)
        if label in (2, 4):
            lamps[:, 2] = blink
        if label in (3, 4):
            lamps[:, 3] = blink
    return lamps


def _rect(x: np.ndarray, y: np.ndarray, box, width: int, height: int) -> np.ndarray:
    """Anti-aliased coverage of a box: separable, (T, 1, W) x (T, H, 1) -> (T, H, W)."""
    x0, y0, x1, y1 = box
    cx = np.clip(np.minimum(x - x0, x1 - x) * width + 0.5, 0.0, 1.0)
    cy = np.clip(np.minimum(y - y0, y1 - y) * height + 0.5, 0.0, 1.0)
    return cx * cy


def _ellipse(x: np.ndarray, y: np.ndarray, box, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    a, b = (x1 - x0) / 2, (y1 - y0) / 2
    r = np.sqrt(((x - (x0 + x1) / 2) / a) ** 2 + ((y - (y0 + y1) / 2) / b) ** 2)
    return np.clip((1.0 - r) * min(a * width, b * height) + 0.5, 0.0, 1.0)


def _paint(image: np.ndarray, coverage: np.ndarray, colour) -> np.ndarray:
    c = coverage[..., None]
    return image * (1.0 - c) + np.asarray(colour, dtype=np.float32) * c


def _render(
    scene: _Scene,
    lamps: np.ndarray,
    shift: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator,
    noise: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and the lamps' pixel boxes (T, 4, 4)."""
    frames = len(lamps)
    x = ((np.arange(width) + 0.5) / width)[None, None, :] - shift[:, 0, None, None]
    y = ((np.arange(height) + 0.5) / height)[None, :, None] - shift[:, 1, None, None]
    x, y = x.astype(np.float32), y.astype(np.float32)
    t = np.arange(frames)
    # background: sky gradient above a road, a dashed lane line
    mix = np.clip((y - 0.0) / max(scene.horizon, 1e-3), 0, 1)[..., None]
    sky = (scene.sky[0] * (1 - mix) + scene.sky[1] * mix).astype(np.float32)
    road = np.clip((y - scene.horizon) * height + 0.5, 0, 1)
    image = _paint(np.broadcast_to(sky, (frames, height, width, 3)), road, scene.road)
    image = _paint(
        image,
        _rect(x, y, (0.49, scene.horizon + 0.05, 0.51, 1.0), width, height) * (np.sin(y * 40) > 0),
        (0.8, 0.8, 0.7),
    )
    # the car: wheels, body, cabin, windscreen, grille, lamps
    cx, bottom, w, h = scene.car
    top = bottom - h
    for sign in (-1, 1):
        wheel = (
            cx + sign * 0.35 * w - 0.07 * w,
            bottom - 0.05 * h,
            cx + sign * 0.35 * w + 0.07 * w,
            bottom + 0.12 * h,
        )
        image = _paint(image, _rect(x, y, wheel, width, height), (0.05, 0.05, 0.05))
    image = _paint(
        image, _rect(x, y, (cx - w / 2, top, cx + w / 2, bottom), width, height), scene.body
    )
    cabin = (cx - 0.36 * w, top - 0.55 * h, cx + 0.36 * w, top + 0.02)
    image = _paint(image, _rect(x, y, cabin, width, height), scene.body * 0.8)
    glass = (cx - 0.3 * w, top - 0.48 * h, cx + 0.3 * w, top - 0.05 * h)
    image = _paint(image, _rect(x, y, glass, width, height), (0.15, 0.2, 0.28))
    grille = (cx - 0.16 * w, top + 0.3 * h, cx + 0.16 * w, top + 0.55 * h)
    image = _paint(image, _rect(x, y, grille, width, height), scene.body * 0.35)
    image = image * scene.light  # ambient light; lit lamps and distractors are emitters
    image = image.astype(np.float32)
    glow = np.zeros_like(image)
    for k, box in enumerate(scene.lamp_boxes):
        shape = _ellipse if k < 2 else _rect
        coverage = shape(x, y, box, width, height)
        lit = lamps[:, k, None, None]
        on = _HEADLIGHT_ON if k < 2 else scene.indicator
        colour_on, colour_off = np.asarray(on, np.float32), scene.lamp_off[k] * scene.light
        image = _paint(image, coverage * ~lit, colour_off)
        image = _paint(image, coverage * lit, colour_on)
        bx, by = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        sx, sy = box[2] - box[0], box[3] - box[1]
        if lit.any():
            halo = np.exp(-(((x - bx) / sx) ** 2 + ((y - by) / sy) ** 2))
            glow += (0.25 * lit * halo)[..., None] * colour_on
    for dx, dy, r, colour, period, phase in scene.distractors:
        lit = np.ones(frames, bool) if period == 0 else (t + phase) % period < period // 2
        disc = _ellipse(
            x, y, (dx - r, dy - r * width / height, dx + r, dy + r * width / height), width, height
        )
        image = _paint(image, disc * lit[:, None, None], _DISTRACTOR_COLOURS[int(colour)])
    image = image + glow
    if noise:
        image = image + rng.normal(0.0, scene.noise, image.shape).astype(np.float32)
    frames_u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    boxes = scene.lamp_boxes[None] + np.tile(shift, 2)[:, None, :]
    boxes = boxes * np.array([width, height, width, height])
    return frames_u8, boxes.astype(np.float32)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _shifts(rng: np.random.Generator, scene: _Scene, frames: int, jitter: bool) -> np.ndarray:
    steps = rng.normal(0.0, scene.jitter, (frames, 2))
    return np.cumsum(steps, axis=0) * 0.6 + steps if jitter else np.zeros((frames, 2))


def make_clip(
    seed: int,
    frames: int = 6,
    size: int | tuple[int, int] = 112,
    label: int | None = None,
    *,
    noise: bool = True,
    jitter: bool = True,
    distractors: bool = True,
) -> CarClip:
    """One clip, a pure function of its arguments (`size` = side, or (height, width)).

    `label=None` draws the class from the seed; `noise` / `jitter` / `distractors` = False
    switch off the sensor noise / camera shake / other lights (for tests and figures); the rest
    of the clip stays the same."""
    height, width = _size(size)
    rng = np.random.default_rng(seed)
    drawn = int(rng.integers(len(CLASS_NAMES)))
    label = drawn if label is None else int(label)
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not a class: 0..{len(CLASS_NAMES) - 1} ({CLASS_NAMES})")
    scene = _sample_scene(rng)
    if not distractors:
        scene.distractors = scene.distractors[:0]
    lamps = _lamp_program(rng, label, frames)
    shift = _shifts(rng, scene, frames, jitter)
    video, boxes = _render(scene, lamps, shift, height, width, rng, noise)
    return CarClip(video, boxes[:, list(DECIDING_LAMPS[label])], label, lamps)


def make_sequence(
    seed: int,
    labels: list[int],
    frames_each: int,
    size: int | tuple[int, int] = 224,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """One car whose lamps go through `labels` in turn, `frames_each` frames per class (the
    sample video).  Returns frames (T, H, W, 3), per-frame deciding boxes, per-frame labels."""
    height, width = _size(size)
    rng = np.random.default_rng(seed)
    scene = _sample_scene(rng)
    lamps = np.concatenate([_lamp_program(rng, label, frames_each) for label in labels])
    shift = _shifts(rng, scene, len(lamps), True)
    video, boxes = _render(scene, lamps, shift, height, width, rng, True)
    per_frame = np.repeat(np.asarray(labels), frames_each)
    deciding = [boxes[t, list(DECIDING_LAMPS[int(per_frame[t])])] for t in range(len(lamps))]
    return video, deciding, per_frame


def make_batch(
    seeds, frames: int = 6, size: int = 112, labels=None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Clips for `seeds`: uint8 (B, T, H, W, 3), labels (B,) int64, boxes per clip."""
    clips = [
        make_clip(int(s), frames, size, None if labels is None else int(labels[i]))
        for i, s in enumerate(seeds)
    ]
    video = np.stack([c.frames for c in clips])
    return video, np.array([c.label for c in clips], dtype=np.int64), [c.boxes for c in clips]
