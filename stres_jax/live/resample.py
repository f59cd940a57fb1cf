"""Resampling a stream to the net's frame rate as its frames arrive, by the rule a file gets.

A constant-rate stream follows torchvision's `VideoClips` rule on frame counts (`sampling.
resample_indices`): every `step`-th frame for a whole step, else `floor(k * step)` in float32 for
the first `floor(n * rate / fps)` ticks of `n` frames, so tick k is released once the frame that
confirms it has arrived (at most one source frame later). A frame off its constant-rate slot by
more than a quarter frame switches the segment to the timestamp rule (`sampling.resample_by_time`):
each tick takes the frame on screen at that time, known when the next frame arrives.
"""
import math

import numpy as np

OFF_SLOT = 0.25  # frames: as `decode.VideoInfo.is_constant_rate`


class Resampler:
    """`push(time, item)` -> [(tick, time, item)] released; `end()` releases the rest.

    `fps` is the stream's declared rate (None if unknown: timestamps only); `frame_rate` the net's
    (None: every frame)."""

    def __init__(self, fps, frame_rate):
        self.fps, self.rate = fps, frame_rate
        self.by_index = bool(fps) and frame_rate is not None
        self.step = fps / frame_rate if self.by_index else None
        self.seen, self.tick = 0, 0
        self.held = {}            # index -> (time, item) a pending tick may still take
        self.first = self.last = None

    def push(self, time, item):
        index = self.seen
        self.seen += 1
        if self.first is None:
            self.first = time
        if self.rate is None:
            self.tick += 1
            return [(index, time, item)]
        if self.by_index and abs((time - self.first) - index / self.fps) * self.fps > OFF_SLOT:
            self.by_index = False  # a variable-rate stream: timestamps from here on
        released = self._by_index(index, time, item) if self.by_index else self._by_time(time)
        self.last = (time, item)
        return released

    def _frame_of(self, tick):
        if float(self.step).is_integer():
            return tick * int(self.step)
        return int(np.floor(np.float32(tick) * np.float32(self.step)))  # torch's float32 product

    def _by_index(self, index, time, item):
        self.held[index] = (time, item)
        if float(self.step).is_integer():
            confirmed = index // int(self.step) + 1
        else:
            confirmed = int(math.floor(self.seen * self.rate / self.fps))
        released = []
        while self.tick < confirmed and self._frame_of(self.tick) <= index:
            frame = self._frame_of(self.tick)
            released.append((self.tick, *self.held[frame]))
            self.tick += 1
        lowest = self._frame_of(self.tick)
        self.held = {i: v for i, v in self.held.items() if i >= lowest}
        return released

    def _by_time(self, time):
        """Ticks before this frame's time show the previous frame."""
        released = []
        while self.last is not None and self.first + self.tick / self.rate + 1e-9 < time:
            released.append((self.tick, *self.last))
            self.tick += 1
        return released

    def end(self):
        """The ticks the stream's last frame still covers (timestamp rule); none by the count rule."""
        if self.rate is None or self.by_index or self.last is None or self.seen < 2:
            return []
        span = self.last[0] - self.first
        duration = span * self.seen / (self.seen - 1)
        released = []
        while self.tick < math.floor(duration * self.rate):
            released.append((self.tick, *self.last))
            self.tick += 1
        return released
