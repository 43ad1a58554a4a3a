"""Cutting a frame stream into sliding-window clips, and averaging their maps back per frame.

Windows start every `stride` frames.  When the stream ends, the frames no window covered get
one last window aligned to the end (it adds only to those frames, which are not final yet);
a video shorter than one clip is padded by repeating its last frame.  A frame is final as soon
as no later window can start at or before it, so memory holds at most clip_len + stride frames.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Item = TypeVar("Item")


@dataclass
class Clip(Generic[Item]):
    index: int  # clip number in the video
    start: int  # index of its first frame
    items: list[Item]  # clip_len items (the last ones repeated when padded)
    valid: int  # how many items are real frames
    owns_from: int  # it adds its maps to frames >= owns_from only

    def frames(self) -> range:
        """Indices of the frames this clip's maps are averaged into."""
        return range(max(self.start, self.owns_from), self.start + self.valid)


class SlidingClips(Generic[Item]):
    """push(item) -> the clips completed by it; finish() -> the closing clip, if any."""

    def __init__(self, clip_len: int, stride: int) -> None:
        if clip_len < 1:
            raise ValueError(f"clip length must be >= 1, got {clip_len}")
        if not 1 <= stride <= clip_len:
            raise ValueError(
                f"stride must be between 1 and the clip length ({clip_len}), got {stride}: a "
                "larger stride would leave frames no clip explains"
            )
        self.clip_len, self.stride = clip_len, stride
        self.buffer: collections.deque = collections.deque(maxlen=clip_len)
        self.count = 0  # frames pushed
        self.next_start = 0  # where the next window starts
        self.covered = 0  # frames [0, covered) are in some emitted window
        self.clips = 0
        self.padded = 0  # frames added by padding (a video shorter than a clip)

    @property
    def final_before(self) -> int:
        """Frames below this index get no more maps."""
        return self.next_start

    def push(self, item: Item) -> list[Clip[Item]]:
        self.buffer.append(item)
        self.count += 1
        if self.count - self.next_start == self.clip_len:
            clip = Clip(self.clips, self.next_start, list(self.buffer), self.clip_len, 0)
            self.clips += 1
            self.covered = self.next_start + self.clip_len
            self.next_start += self.stride
            return [clip]
        return []

    def finish(self) -> list[Clip[Item]]:
        """The window for the frames left uncovered (aligned to the end, or padded)."""
        uncovered = self.count > self.covered
        owns_from = self.covered  # only the frames no earlier window covered
        self.next_start = self.count  # everything is final after this
        if not uncovered:
            return []
        items = list(self.buffer)
        valid = len(items)
        if valid < self.clip_len:  # shorter than one clip: repeat the last frame
            self.padded = self.clip_len - valid
            items += [items[-1]] * self.padded
        start = self.count - valid
        self.clips += 1
        return [Clip(self.clips - 1, start, items, valid, owns_from)]


class FrameAverager:
    """Sums per-frame values (maps, probabilities) from overlapping clips; pops final frames."""

    def __init__(self) -> None:
        self.sums: dict[int, list] = {}

    def add(self, frame: int, values: dict[str, np.ndarray], clip: int) -> None:
        entry = self.sums.setdefault(frame, [{}, 0, []])
        for key, value in values.items():
            entry[0][key] = entry[0][key] + value if key in entry[0] else value.astype(np.float32)
        entry[1] += 1
        entry[2].append(clip)

    def pop_before(self, end: int) -> list[tuple[int, dict[str, np.ndarray], list[int]]]:
        """(frame, averaged values, clip indices) of every frame below `end`, in order."""
        done = sorted(f for f in self.sums if f < end)
        out = []
        for f in done:
            values, count, clips = self.sums.pop(f)
            out.append((f, {k: v / count for k, v in values.items()}, clips))
        return out
