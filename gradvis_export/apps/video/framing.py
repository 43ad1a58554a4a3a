"""How a frame becomes the model's input, and how the model's map goes back onto the frame.

`crop` (the default, the standard evaluation transform): the shorter side scaled to the
model's side, the centre cut out; the map is drawn inside that centre only.  `pad`: the longer
side scaled to the model's side, black bars (letterbox) around; the map's part over the picture
covers the whole frame.  `squash`: the frame scaled to the model's square whatever its aspect
ratio (what gradvis did before 0.2); the map is stretched back.  No mode draws heat on pixels
the model did not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESIZE_MODES = ("crop", "pad", "squash")


@dataclass(frozen=True)
class Framing:
    """The geometry for frames of width x height and a model side of `size` pixels."""

    mode: str
    width: int
    height: int
    size: int
    scaled: tuple[int, int]  # (w, h) the frame is resized to before the crop or the bars
    offset: tuple[int, int]  # crop: the cut's corner in the scaled frame; pad: the picture's

    @classmethod
    def of(cls, mode: str, width: int, height: int, size: int) -> Framing:
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
        if mode == "squash":
            return cls(mode, width, height, size, (size, size), (0, 0))
        if mode == "crop":
            scale = size / min(width, height)
            sw, sh = max(size, round(width * scale)), max(size, round(height * scale))
            return cls(mode, width, height, size, (sw, sh), ((sw - size) // 2, (sh - size) // 2))
        scale = size / max(width, height)
        sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(mode, width, height, size, (sw, sh), ((size - sw) // 2, (size - sh) // 2))

    def model_input(self, frame) -> np.ndarray:
        """A PyAV frame -> (size, size, 3) uint8 RGB, area-averaged by swscale (antialiased)."""
        sw, sh = self.scaled
        rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA")
        image = rgb.to_ndarray()
        x, y = self.offset
        if self.mode == "crop":
            return np.ascontiguousarray(image[y : y + self.size, x : x + self.size])
        if self.mode == "pad":
            out = np.zeros((self.size, self.size, 3), np.uint8)
            out[y : y + sh, x : x + sw] = image
            return out
        return image

    def to_frame(self, heat: np.ndarray) -> np.ndarray:
        """A (size, size) map -> a map with the frame's aspect ratio (at the model's scale), to
        be upsampled to the frame: zero outside a crop, the picture's part of a letterbox."""
        x, y = self.offset
        if self.mode == "crop":
            sw, sh = self.scaled
            canvas = np.zeros((sh, sw), heat.dtype)
            canvas[y : y + self.size, x : x + self.size] = heat
            return canvas
        if self.mode == "pad":
            sw, sh = self.scaled
            return heat[y : y + sh, x : x + sw]
        return heat

    def box_to_model(self, box: list[float]) -> list[float]:
        """[x1, y1, x2, y2] in frame pixels -> in the model input's pixels."""
        sw, sh = self.scaled
        fx, fy = sw / self.width, sh / self.height
        x, y = self.offset
        dx, dy = {"crop": (-x, -y), "pad": (x, y)}.get(self.mode, (0, 0))
        x1, y1, x2, y2 = box
        return [x1 * fx + dx, y1 * fy + dy, x2 * fx + dx, y2 * fy + dy]

    def mask_to_model(self, mask: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
        """A (height, width) mask of the frame -> the model's view of it (nearest pixels),
        at `shape` (the mask input's size; default the model's square)."""
        sw, sh = self.scaled
        rows = np.minimum(
            ((np.arange(sh) + 0.5) * self.height / sh).astype(np.int64), self.height - 1
        )
        cols = np.minimum(
            ((np.arange(sw) + 0.5) * self.width / sw).astype(np.int64), self.width - 1
        )
        scaled = mask[rows][:, cols]
        x, y = self.offset
        if self.mode == "crop":
            view = scaled[y : y + self.size, x : x + self.size]
        elif self.mode == "pad":
            view = np.zeros((self.size, self.size), mask.dtype)
            view[y : y + sh, x : x + sw] = scaled
        else:
            view = scaled
        if shape is not None and tuple(shape) != view.shape:
            h, w = shape
            rows = ((np.arange(h) + 0.5) * view.shape[0] / h).astype(np.int64)
            cols = ((np.arange(w) + 0.5) * view.shape[1] / w).astype(np.int64)
            view = view[rows][:, cols]
        return np.ascontiguousarray(view, np.float32)

    def region(self) -> list[int]:
        """The part of the frame the model saw, [x1, y1, x2, y2] in frame pixels."""
        if self.mode != "crop":
            return [0, 0, self.width, self.height]
        sw, sh = self.scaled
        x, y = self.offset
        fx, fy = self.width / sw, self.height / sh
        return [
            round(x * fx),
            round(y * fy),
            round((x + self.size) * fx),
            round((y + self.size) * fy),
        ]

    def record(self) -> dict[str, object]:
        """What the JSON sidecar says about the mapping."""
        return {"resize": self.mode, "model_region": self.region(), "scaled": list(self.scaled)}
