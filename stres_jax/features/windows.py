"""Dense windows over a whole video: `clip_len` resampled frames every `stride`, and their times."""
import dataclasses

import numpy as np

from stres_jax.data import sampling
from stres_jax.models.preset import TORCHVISION, Preset

MAX_INDICES = 50_000_000  # frame indices in one video's window plan (400 MB of int64)


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Window k covers the frames `[k*stride, k*stride + clip_len)` of the video resampled to `fps`
    by torchvision's rule (as eval resamples; `fps=0`: the native frames), for every k with
    `k*stride + clip_len <= n`; a video shorter than one window gives one, its last frame repeated
    (as the eval protocol's clips). `stride` 0 means `clip_len`. A net whose preset takes every
    `frame_interval`-th frame (the CSN nets: 2) has windows of every such frame."""
    clip_len: int = sampling.CLIP_LEN
    fps: float = float(sampling.FRAME_RATE)
    stride: int = 0
    preset: Preset = TORCHVISION  # the net's pixels and values, and its frame interval

    @classmethod
    def of(cls, preset, clip_len=None, fps=None, stride=0):
        """The plan of a net's `preset`, with the parts given (not None) changed."""
        fps = float(preset.frame_rate or 0) if fps is None else fps
        return cls(clip_len or preset.clip_len, fps, stride or 0, preset)

    @property
    def interval(self):
        return self.preset.frame_interval

    @property
    def step(self):
        return self.stride or self.clip_len

    def __post_init__(self):
        from stres_jax.errors import UserError
        if not (isinstance(self.clip_len, int) and 1 <= self.clip_len <= sampling.MAX_CLIP_LEN):
            raise UserError(f"clip_len {self.clip_len!r}: must be a whole number from 1 to {sampling.MAX_CLIP_LEN}")
        if not (isinstance(self.stride, int) and 0 <= self.stride <= sampling.MAX_STRIDE):
            raise UserError(f"stride {self.stride!r}: must be a whole number from 0 (= clip_len) to {sampling.MAX_STRIDE:,}")
        if sampling.rate_problem(self.fps):
            raise UserError(f"fps {self.fps!r}: {sampling.rate_problem(self.fps)}")

    def windows(self, info):
        """(frame indices (N, clip_len) of the native frames, start (N,) s, end (N,) s) of a VideoInfo."""
        frames = info.resampled(self.fps or None)[:: self.interval]
        frames = frames if len(frames) else np.zeros(1, np.int64)  # a video shorter than one resampled frame
        offsets = np.arange(0, max(len(frames) - self.clip_len, 0) + 1, self.step)
        if len(offsets) * self.clip_len > MAX_INDICES:
            from stres_jax.errors import UserError
            raise UserError(f"{len(offsets):,} windows of {self.clip_len} frames would be planned for this video "
                            f"(at most {MAX_INDICES:,} frame indices); use a larger --stride or a lower --fps")
        if len(frames) < self.clip_len:
            frames = np.concatenate([frames, np.repeat(frames[-1:], self.clip_len - len(frames))])
        indices = np.stack([frames[k: k + self.clip_len] for k in offsets])
        if self.fps:
            return indices, offsets * self.interval / self.fps, (offsets + self.clip_len) * self.interval / self.fps
        return indices, info.times[indices[:, 0]].astype(np.float64), info.times[indices[:, -1]].astype(np.float64)

    def describe(self):
        described = {"clip_len": self.clip_len, "fps": self.fps, "stride": self.step}
        return described if self.preset == TORCHVISION.replace(clip_len=self.preset.clip_len) else \
            {**described, "preset": self.preset.to_json()}  # the records of the torchvision nets stay as they were
