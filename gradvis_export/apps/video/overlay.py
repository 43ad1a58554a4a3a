"""Heatmap -> colour overlay on an RGB frame, or on the YUV 4:2:0 planes H.264 stores."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from gradvis_export.core.maps import COLORMAP_LINES

if TYPE_CHECKING:
    pass


def _channel(h: np.ndarray, c: int, scale: float = 1.0) -> np.ndarray:
    """Channel `c` of the colormap at h (float32 in [0, 1]), times `scale`, as float32."""
    (a1, b1), (a2, b2) = COLORMAP_LINES[c]
    up = h * np.float32(a1 * scale)
    up += np.float32(b1 * scale)
    down = h * np.float32(a2 * scale)
    down += np.float32(b2 * scale)
    np.minimum(up, down, out=up)
    return np.clip(up, 0.0, scale, out=up)


def _unit(heatmap: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(heatmap.astype(np.float32, copy=False)), 0.0, 1.0)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float32 RGB in [0, 1]."""
    h = _unit(heatmap)
    return np.stack([_channel(h, c) for c in range(3)], axis=-1)


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0,1] heatmap of the frame's size onto a uint8 RGB frame (H, W, 3).

    The opacity is alpha * heatmap per pixel: where the map is 0 the frame is unchanged, where
    it is 1 the colour covers it with opacity alpha.  Channel by channel in float32, in place,
    as this runs on every frame of a video.
    """
    if frame.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap {heatmap.shape} does not match frame {frame.shape[:2]}")
    h = _unit(heatmap)
    weight = h * np.float32(alpha)
    out = np.empty(frame.shape, np.uint8)
    for c in range(3):
        colour = _channel(h, c, 255.0)
        base = frame[..., c].astype(np.float32)
        colour -= base  # frame + weight * (colour - frame) = (1 - weight) frame + weight colour
        colour *= weight
        colour += base
        np.rint(colour, out=colour)
        out[..., c] = np.clip(colour, 0, 255, out=colour)
    return out


# BT.601 limited range ("TV" levels), what swscale assumes for yuv420p <-> rgb24 when a stream
# says nothing else: (Y, U, V) = offset + matrix @ (R, G, B) for RGB in [0, 255].
_YUV_MATRIX = (
    np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    / 255.0
)
_YUV_OFFSET = np.array([16.0, 128.0, 128.0])


@functools.lru_cache(maxsize=8)
def _yuv_blend_tables(alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plane (Y, U, V) a 256 x 256 uint8 table: [q, p] -> p blended with the colour of
    the map value q / 255 at opacity alpha * q / 255.  The blend is affine, so blending in YUV
    equals blending in RGB and converting; one table lookup per pixel replaces the arithmetic."""
    h = np.arange(256, dtype=np.float64) / 255.0
    rgb = np.stack([_channel(h.astype(np.float32), c, 255.0) for c in range(3)], axis=-1)
    colour = rgb.astype(np.float64) @ _YUV_MATRIX.T + _YUV_OFFSET  # (256, 3)
    weight = (alpha * h)[:, None]  # (256, 1) per q
    p = np.arange(256, dtype=np.float64)[None, :]  # (1, 256) per plane value
    return tuple(
        np.clip(np.rint(p + weight * (colour[:, c : c + 1] - p)), 0, 255).astype(np.uint8)
        for c in range(3)
    )


def quantise(heatmap: np.ndarray) -> np.ndarray:
    """[0, 1] float map -> uint8 0..255 (what the 8-bit overlay tables index)."""
    return np.rint(_unit(heatmap) * np.float32(255.0)).astype(np.uint8)


def _linear_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resampling, half-pixel centres (PyTorch's
    align_corners=False): output i reads (i + 0.5) * size / out - 0.5, clamped at the edges."""
    src = np.maximum((np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5, 0.0)
    low = np.minimum(src.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    return low, high, (src - low).astype(np.float32)


def upsample_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) uint8 map -> (height, width) uint8, bilinear, rows then columns.

    NumPy on purpose: this runs on the render thread next to the explainer, where torch's
    intra-op threads would compete for the same cores."""
    rows_lo, rows_hi, wy = _linear_taps(values.shape[0], height)
    cols_lo, cols_hi, wx = _linear_taps(values.shape[1], width)
    v = values.astype(np.float32)
    rows = v[rows_lo]
    rows += (v[rows_hi] - rows) * wy[:, None]
    out = rows[:, cols_lo]
    out += (rows[:, cols_hi] - out) * wx
    return np.rint(out, out=out).astype(np.uint8)


def overlay_yuv420(yuv: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`overlay` on a yuv420p frame, (H * 3/2, W) uint8 as PyAV lays it out (Y, then U, then V).

    `heat` is the uint8 map (`quantise`) at chroma resolution, (H/2, W/2): the colour planes
    are stored there anyway, and the luma plane uses each value for its 2 x 2 pixels.  Where
    the map is 0 the planes are returned unchanged; no RGB conversion happens at all, which is
    what makes this cheap enough for every frame of a long video.
    """
    rows, width = yuv.shape
    height = rows * 2 // 3
    if height % 2 or width % 2 or rows != height * 3 // 2:
        raise ValueError(f"a yuv420p frame of even size is (H*3/2, W), got {yuv.shape}")
    if heat.shape != (height // 2, width // 2) or heat.dtype != np.uint8:
        raise ValueError(
            f"heat must be uint8 of shape {(height // 2, width // 2)}, got {heat.dtype} "
            f"{heat.shape}"
        )
    tables = _yuv_blend_tables(float(alpha))
    index = heat.astype(np.uint16) << 8  # [q, p] -> q * 256 + p
    out = np.empty_like(yuv)
    source, target = yuv_planes(yuv), yuv_planes(out)
    # each map value covers a 2 x 2 luma block: repeat it along the row, broadcast over rows
    luma = np.repeat(index, 2, axis=1)[:, None, :] | source[0].reshape(height // 2, 2, width)
    target[0][...] = tables[0].ravel().take(luma).reshape(height, width)
    for plane in (1, 2):
        target[plane][...] = tables[plane].ravel().take(index | source[plane])
    return out


def yuv_planes(yuv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of Y (H, W), U and V (H/2, W/2) in PyAV's yuv420p layout (H * 3/2, W): the
    planes one after the other in memory, so U and V may start in the middle of a row."""
    rows, width = yuv.shape
    height = rows * 2 // 3
    flat = yuv.reshape(-1)
    size, quarter = height * width, height * width // 4
    return (
        flat[:size].reshape(height, width),
        flat[size : size + quarter].reshape(height // 2, width // 2),
        flat[size + quarter :].reshape(height // 2, width // 2),
    )


def hot_boxes(
    heatmap: np.ndarray, threshold: float = 0.6, max_boxes: int = 5, min_area: int = 16
) -> list[list[float]]:
    """Boxes [x1, y1, x2, y2, peak] around the connected regions where heatmap >= threshold,
    hottest first (pixel coordinates, x2/y2 exclusive)."""
    from scipy import ndimage

    labels, count = ndimage.label(heatmap >= threshold)
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        inside = labels[region] == index
        if int(inside.sum()) < min_area:
            continue
        peak = float(heatmap[region][inside].max())
        boxes.append([int(xs.start), int(ys.start), int(xs.stop), int(ys.stop), round(peak, 4)])
    boxes.sort(key=lambda b: -b[4])
    return boxes[:max_boxes]


def frame_boxes(
    heatmap: np.ndarray,
    width: int,
    height: int,
    threshold: float = 0.6,
    max_boxes: int = 5,
    cells: int = 64,
) -> list[list[float]]:
    """`hot_boxes` of a map at the model's resolution, in the pixel coordinates of a
    width x height frame.  Labelling a small map is what makes boxes cheap on every frame: a
    map larger than `cells` per side is max-pooled to at most that first (peaks survive; box
    edges move outwards by less than one pooled cell)."""
    rows, cols = heatmap.shape
    step = max(1, -(-max(rows, cols) // cells))
    if step > 1:
        padded = np.pad(heatmap, ((0, -rows % step), (0, -cols % step)))  # 0: never hot
        pooled = padded[::step]
        for k in range(1, step):  # maxima of strided slices: much faster than max(axis=...)
            pooled = np.maximum(pooled, padded[k::step])
        heatmap = pooled[:, ::step]
        for k in range(1, step):
            heatmap = np.maximum(heatmap, pooled[:, k::step])
    sy, sx = height / rows * step, width / cols * step  # pooled cell -> frame pixels
    min_area = max(1, round(16 / (sx * sy)))  # 16 frame pixels
    return [
        [
            max(0, int(x1 * sx)),
            max(0, int(y1 * sy)),
            min(width, int(np.ceil(x2 * sx))),
            min(height, int(np.ceil(y2 * sy))),
            peak,
        ]
        for x1, y1, x2, y2, peak in hot_boxes(heatmap, threshold, max_boxes, min_area)
    ]


def draw_boxes(
    frame: np.ndarray, boxes: list[list[float]], colour=(255, 255, 255), width: int = 2
) -> np.ndarray:
    """Rectangles (in place on a copy) around `boxes` of a uint8 RGB frame."""
    out = frame.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2, *_ in boxes:
        x1, y1 = max(int(x1), 0), max(int(y1), 0)
        x2, y2 = min(int(x2), w), min(int(y2), h)
        out[y1 : y1 + width, x1:x2] = colour
        out[max(y2 - width, 0) : y2, x1:x2] = colour
        out[y1:y2, x1 : x1 + width] = colour
        out[y1:y2, max(x2 - width, 0) : x2] = colour
    return out


def draw_boxes_yuv420(
    yuv: np.ndarray, boxes: list[list[float]], colour=(255, 255, 255), width: int = 2
) -> np.ndarray:
    """`draw_boxes` on a yuv420p frame (H * 3/2, W), edges on even pixels (chroma pairs)."""
    rows, w = yuv.shape
    h = rows * 2 // 3
    y, u, v = np.rint(np.asarray(colour, np.float64) @ _YUV_MATRIX.T + _YUV_OFFSET).astype(np.uint8)
    out = yuv.copy()
    planes = list(zip(yuv_planes(out), (1, 2, 2), (y, u, v)))
    for x1, y1, x2, y2, *_ in boxes:
        x1, y1 = max(int(x1), 0) // 2 * 2, max(int(y1), 0) // 2 * 2
        x2, y2 = -(-min(int(x2), w) // 2) * 2, -(-min(int(y2), h) // 2) * 2
        for plane, scale, value in planes:
            a, b, c, d, t = x1 // scale, y1 // scale, x2 // scale, y2 // scale, -(-width // scale)
            plane[b : b + t, a:c] = value
            plane[max(d - t, 0) : d, a:c] = value
            plane[b:d, a : a + t] = value
            plane[b:d, max(c - t, 0) : c] = value
    return out


def signed_image(values: np.ndarray) -> np.ndarray:
    """(H, W, 3) signed values (a guided gradient) -> uint8 RGB, 0 at mid-grey."""
    scale = float(np.abs(values).max()) or 1.0
    return ((values / scale * 0.5 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=256)
def _label_masks(text: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(outline, fill) boolean masks of `text` in OpenCV's Hershey font, sized for a frame of
    `height` rows (readable from 120 to 2160 rows): a white fill on a black outline reads on any
    picture."""
    import cv2

    scale = max(0.45, height / 720.0 * 0.9)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = thick + 2
    canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    origin = (pad, pad + th)
    # drawn at 255 and cut at half: anti-aliased at value 1, a thin stroke rounds away to 0
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick + 2, cv2.LINE_AA)
    outline = canvas > 127
    canvas[...] = 0
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    return outline, canvas > 127


def _label_corner(height: int) -> int:
    return max(2, height // 60) // 2 * 2  # even: chroma pairs stay aligned


def draw_label(frame: np.ndarray, text: str) -> np.ndarray:
    """`text` (the predicted label and score) in the top-left corner of a uint8 RGB frame,
    drawn into the frame itself (the video job draws on the overlay it just made) and
    returned."""
    out = frame
    outline, fill = _label_masks(text, out.shape[0])
    at = _label_corner(out.shape[0])
    h, w = min(outline.shape[0], out.shape[0] - at), min(outline.shape[1], out.shape[1] - at)
    region = out[at : at + h, at : at + w]
    region[outline[:h, :w]] = 0
    region[fill[:h, :w]] = 255
    return out


def draw_label_yuv420(yuv: np.ndarray, text: str) -> np.ndarray:
    """`draw_label` on a yuv420p frame, in place: white on black in luma, grey (no colour) in
    chroma."""
    out = yuv
    luma, u, v = yuv_planes(out)
    outline, fill = _label_masks(text, luma.shape[0])
    at = _label_corner(luma.shape[0])
    h = min(outline.shape[0], luma.shape[0] - at) // 2 * 2
    w = min(outline.shape[1], luma.shape[1] - at) // 2 * 2
    outline, fill = outline[:h, :w], fill[:h, :w]
    region = luma[at : at + h, at : at + w]
    region[outline] = 16
    region[fill] = 235
    chroma = outline.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
    for plane in (u, v):
        plane[at // 2 : at // 2 + h // 2, at // 2 : at // 2 + w // 2][chroma] = 128
    return out
