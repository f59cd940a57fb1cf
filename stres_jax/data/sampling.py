"""Which frames form which clips: torchvision's video-level protocol, target length, windows.

Every function returns frame indices into the video's frames in presentation order.
"""
import dataclasses
import math

import numpy as np

from stres_jax.models.preset import TORCHVISION, Preset

CLIP_LEN = 16
NUM_CLIPS = 5
FRAME_RATE = 15
# Bounds every option is checked against before a video is opened (a clip of 1,024 frames is
# already 150 MB of input; 1,000 fps is above any camera's rate).
MAX_CLIP_LEN, MAX_FRAME_RATE, MAX_STRIDE, MAX_CLIPS = 1024, 1000.0, 1_000_000, 1000
LIMITS = {"clip_len": MAX_CLIP_LEN, "window": MAX_CLIP_LEN, "target_length": MAX_CLIP_LEN,
          "stride": MAX_STRIDE, "clips": MAX_CLIPS}


def rate_problem(value):
    """Why `value` is not a frame rate to resample to (None if it is: finite, 0 < value <= 1000,
    or exactly 0 for the native frames)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"must be a finite number of frames/s, from 0 (the native frames) to {MAX_FRAME_RATE:g}"
    if value < 0 or value > MAX_FRAME_RATE:
        return f"must be from 0 (the native frames) to {MAX_FRAME_RATE:g} frames/s"
    return None


def resample_indices(num_frames, fps, frame_rate=FRAME_RATE):
    """torchvision VideoClips' resampling of `num_frames` frames at `fps` to `frame_rate`."""
    if frame_rate is None:
        return np.arange(num_frames)
    step = float(fps) / float(frame_rate)
    if step.is_integer():
        return np.arange(num_frames)[:: int(step)]
    count = int(math.floor(num_frames * float(frame_rate) / float(fps)))
    # torch computes arange(count, dtype=float32) * step in float32, then floors.
    return np.floor(np.arange(count, dtype=np.float32) * np.float32(step)).astype(np.int64)


def resample_by_time(times, duration, frame_rate=FRAME_RATE):
    """For variable-frame-rate video: at each tick of `frame_rate`, the frame on screen."""
    ticks = np.arange(int(math.floor(duration * frame_rate))) / frame_rate
    return np.maximum(np.searchsorted(times, ticks + 1e-9, side="right") - 1, 0)


def uniform_starts(num_windows, num_clips=NUM_CLIPS):
    """`floor(torch.linspace(0, num_windows - 1, num_clips))`, with torch's float32 arithmetic."""
    if num_clips == 1:
        return np.zeros(1, np.int64)
    end = np.float32(num_windows - 1)
    step = end / np.float32(num_clips - 1)
    i = np.arange(num_clips)
    from_start = step * i.astype(np.float32)
    from_end = end - step * (num_clips - 1 - i).astype(np.float32)
    starts = np.floor(np.where(i < num_clips // 2, from_start, from_end)).astype(np.int64)
    return np.minimum(starts, num_windows - 1)  # float32 rounds up past 2**24 windows (a fuzzed file)


def protocol_clips(resampled, clip_len=CLIP_LEN, num_clips=NUM_CLIPS):
    """`(num_clips, clip_len)` indices from the resampled frame list: all clips of `clip_len`
    with step 1, `num_clips` picked uniformly. A list shorter than one clip repeats its last frame."""
    resampled = np.asarray(resampled, np.int64)
    if resampled.size == 0:
        resampled = np.zeros(1, np.int64)
    if resampled.size < clip_len:
        resampled = np.concatenate([resampled, np.repeat(resampled[-1], clip_len - resampled.size)])
    starts = uniform_starts(resampled.size - clip_len + 1, num_clips)
    return resampled[starts[:, None] + np.arange(clip_len)]


def sample_frames_test(num_frames, clip_len, frame_interval, num_clips):
    """`(num_clips, clip_len)` indices as mmaction2's `SampleFrames(clip_len, frame_interval,
    num_clips, test_mode=True)`: offsets spread over the native frames, out-of-range indices looped."""
    span = (clip_len - 1) * frame_interval + 1
    max_offset = max(num_frames - span, 0)
    if num_clips > 1:
        offsets = np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
    else:
        offsets = np.array([max_offset // 2])
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.mod(indices, max(num_frames, 1)).astype(np.int64)


def spread_indices(start, stop, length):
    """`length` indices spread evenly over frames [start, stop) (repeats when it is shorter)."""
    return start + np.floor(np.linspace(0, stop - start - 1, length)).astype(np.int64)


def target_length_clip(num_frames, target_length):
    """One clip of `target_length` frames spread over the whole video: the speed knob."""
    return spread_indices(0, num_frames, target_length)[None]


def windows(num_frames, window, stride, clip_len=CLIP_LEN):
    """[(first frame, end frame, clip indices)] for windows of `window` frames every `stride`.

    Only whole windows are taken (a video shorter than one window gets one); each window
    gives the net `clip_len` frames spread evenly over it.
    """
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be at least 1 frame")
    starts = range(0, max(num_frames - window, 0) + 1, stride)
    return [(s, min(s + window, num_frames), spread_indices(s, min(s + window, num_frames), clip_len))
            for s in starts]


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """Which frames of a video the net sees: the main clips (torchvision's video-level protocol
    by default, or one `target_length` clip over the whole video) and, with `window`, one clip
    per window of `window` video frames every `stride` (the action over time)."""
    clips: int = NUM_CLIPS
    clip_len: int = CLIP_LEN
    frame_rate: float | None = FRAME_RATE  # None: the native rate
    target_length: int | None = None
    window: int | None = None
    stride: int | None = None              # None: `window`
    crops: int = 1                         # spatial views of each main clip: 1 (centre) or 3
    preset: Preset = TORCHVISION           # the net's pixels, values and sampling rule (`Preset`)

    def __post_init__(self):
        for name in ("clips", "clip_len", "target_length", "window", "stride"):
            value, most = getattr(self, name), LIMITS[name]
            if value is not None and not 1 <= value <= most:
                raise ValueError(f"ClipPlan.{name} must be from 1 to {most}, got {value}")
        if self.frame_rate is not None and (rate_problem(self.frame_rate) or self.frame_rate == 0):
            raise ValueError(f"ClipPlan.frame_rate {self.frame_rate!r}: must be above 0 and at most "
                             f"{MAX_FRAME_RATE:g} (None: the native frames)")
        if self.crops not in (1, 3):
            raise ValueError(f"ClipPlan.crops must be 1 or 3, got {self.crops}")

    @classmethod
    def from_protocol(cls, protocol, preset=TORCHVISION):
        """The plan of a config's `protocol` block (frame_rate 0 = native) for a net's `preset`."""
        return cls(protocol.clips_per_video, protocol.clip_len, protocol.frame_rate or None,
                   crops=protocol.get("crops", 1), preset=preset)

    @classmethod
    def of(cls, preset, clips=None, clip_len=None, frame_rate=None, crops=None, **others):
        """The plan of a net's `preset`, with the parts given (not None) changed."""
        pick = lambda given, own: own if given is None else given  # noqa: E731
        rate = preset.frame_rate if frame_rate is None else (frame_rate or None)
        return cls(pick(clips, preset.clips), pick(clip_len, preset.clip_len), rate, crops=pick(crops, preset.crops),
                   preset=preset, **others)

    def describe(self):
        """What of this plan makes the numbers (for a run's identity and its records)."""
        return {"clips": self.clips, "clip_len": self.clip_len, "frame_rate": self.frame_rate, "crops": self.crops,
                "target_length": self.target_length, "preset": self.preset.to_json()}

    def main_clips(self, info):
        """`(clips, clip_len)` frame indices for a video's `VideoInfo`."""
        if self.target_length:
            return target_length_clip(info.num_frames, self.target_length)
        if self.preset.sampling == "mmaction":  # on the native frames, or on those a --frame-rate resamples to
            frames = info.resampled(self.frame_rate)
            frames = frames if len(frames) else np.zeros(1, np.int64)
            return frames[sample_frames_test(len(frames), self.clip_len, self.preset.frame_interval, self.clips)]
        return protocol_clips(info.resampled(self.frame_rate), self.clip_len, self.clips)

    def windows(self, info):
        """[(first frame, end frame, clip indices)], empty without `window`."""
        if not self.window:
            return []
        return windows(info.num_frames, self.window, self.stride or self.window, self.clip_len)
