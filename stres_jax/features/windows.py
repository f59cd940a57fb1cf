"""Dense windows over a whole video: `clip_len` resampled frames every `stride`, and their times."""
import dataclasses

import numpy as np

from stres_jax.data import sampling

MAX_INDICES = 50_000_000  # frame indices in one video's window plan (400 MB of int64)


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Window k covers the frames `[k*stride, k*stride + clip_len)` of the video resampled to `fps`
    by torchvision's rule (as eval resamples; `fps=0`: the native frames), for every k with
    `k*stride + clip_len <= n`; a video shorter than one window gives one, its last frame repeated
    (as the eval protocol's clips). `stride` 0 means `clip_len`."""
    clip_len: int = sampling.CLIP_LEN
    fps: float = float(sampling.FRAME_RATE)
    stride: int = 0

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
        frames = info.resampled(self.fps or None)
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
            return indices, offsets / self.fps, (offsets + self.clip_len) / self.fps
        return indices, info.times[indices[:, 0]].astype(np.float64), info.times[indices[:, -1]].astype(np.float64)

    def describe(self):
        return {"clip_len": self.clip_len, "fps": self.fps, "stride": self.step}
