"""The evaluation protocol a net's weights were made for: how frames are sampled, resized,
cropped and normalised. Each arch row carries one (`ArchSpec.preset`) and every checkpoint
folder records its own (meta.json / config.json `preset`), which every command reads.
"""
import dataclasses
import math

from stres_jax.errors import UserError

TORCHVISION_MEAN = (0.43216, 0.394666, 0.37645)
TORCHVISION_STD = (0.22803, 0.22145, 0.216989)
SAMPLINGS = ("torchvision", "mmaction")
INTERPOLATIONS = ("torch", "opencv")
MAX_SIDE = 4096


@dataclasses.dataclass(frozen=True)
class Preset:
    """One net's test protocol.

    Spatial: `resize` is a fixed (H, W), or None with `short_side` S (the short side to S,
    the aspect kept, sizes rounded as mmcv's `rescale_size`). `interpolation` "torch" is
    torchvision's bilinear without antialias (float32, rounded back to uint8), "opencv" is
    `cv2.resize(INTER_LINEAR)` as mmcv calls it. Then `crops` views of `crop` x `crop`.
    Values: (x / 255 - mean) / std with `scale` 1, (x - mean) / std with `scale` 255.
    Temporal: "torchvision" sampling resamples to `frame_rate` (None: the native frames) and
    picks `clips` of the clip_len-frame windows uniformly; "mmaction" is `SampleFrames(clip_len,
    frame_interval, num_clips=clips, test_mode=True)` on the native frames."""
    resize: tuple | None = (128, 171)
    short_side: int | None = None
    interpolation: str = "torch"
    crop: int = 112
    mean: tuple = TORCHVISION_MEAN
    std: tuple = TORCHVISION_STD
    scale: float = 1.0
    sampling: str = "torchvision"
    frame_rate: float | None = 15.0
    frame_interval: int = 1
    clip_len: int = 16
    clips: int = 5
    crops: int = 1

    def __post_init__(self):
        problem = preset_problem(dataclasses.asdict(self))
        if problem:
            raise ValueError(f"Preset: {problem}")

    def to_json(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, value, where):
        """The preset a checkpoint's json holds; `where` names the file in the one-line error."""
        if not isinstance(value, dict):
            raise UserError(f"{where}: key 'preset' is {value!r:.40}, not an object; convert the checkpoint again")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        problem = f"unknown key {unknown[0]!r}" if unknown else preset_problem({**cls().to_json(), **value})
        if problem:
            raise UserError(f"{where}: key 'preset': {problem}; convert the checkpoint again")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return cls(**fields)

    def replace(self, **changes):
        """This preset with the given parts changed (None values are left as they are)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def preprocessing(self):
        """The summary that meta.json, config.json and the exports have always carried."""
        size = {"resize": list(self.resize)} if self.resize else {"short_side": self.short_side}
        values = {} if self.scale == 1 else {"scale": 255}
        method = "bilinear" if self.interpolation == "torch" else "opencv-bilinear"
        return {**size, "crop": self.crop, "mean": list(self.mean), "std": list(self.std), **values,
                "interpolation": method, "antialias": False, "layout": "NTHWC"}

    def summary(self):
        """One line: 'resize 128x171 (torch bilinear), 5 clips x 1 crop of 112, 16 frames at 15 fps, ...'."""
        size = f"resize {self.resize[0]}x{self.resize[1]}" if self.resize else f"short side {self.short_side}"
        method = "torch bilinear" if self.interpolation == "torch" else "OpenCV bilinear"
        frames = (f"{self.clip_len} frames at {self.frame_rate:g} fps" if self.sampling == "torchvision" and self.frame_rate
                  else f"{self.clip_len} frames, every {self.frame_interval} of the native frames")
        values = "[0, 1]" if self.scale == 1 else "0-255"
        return (f"{size} ({method}), {self.clips} clips x {self.crops} crop{'s' * (self.crops > 1)} of {self.crop}, "
                f"{frames} ({self.sampling} sampling), mean/std on {values}")

    @property
    def spatial(self):
        """The parts that make the pixels (a clip store's frames depend on these)."""
        return {k: self.to_json()[k] for k in ("resize", "short_side", "interpolation")}


def _whole(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _numbers(value, positive):
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > 0 or not positive) for v in value))


def preset_problem(fields):
    """Why `fields` (a preset as a dict) is not a preset, or None."""
    resize, short = fields["resize"], fields["short_side"]
    checks = [
        ((resize is None) != (short is None), "give exactly one of 'resize' (H, W) and 'short_side'"),
        (resize is None or (isinstance(resize, (list, tuple)) and len(resize) == 2
                            and all(_whole(v, 1, MAX_SIDE) for v in resize)), "'resize' must be two sizes"),
        (short is None or _whole(short, 1, MAX_SIDE), f"'short_side' must be from 1 to {MAX_SIDE}"),
        (fields["interpolation"] in INTERPOLATIONS, f"'interpolation' must be one of {', '.join(INTERPOLATIONS)}"),
        (_whole(fields["crop"], 1, MAX_SIDE), f"'crop' must be from 1 to {MAX_SIDE}"),
        (resize is None or fields["crop"] <= min(resize), "'crop' must fit in 'resize'"),
        (short is None or fields["crop"] <= short, "'crop' must fit in 'short_side'"),
        (_numbers(fields["mean"], False) and _numbers(fields["std"], True), "'mean' and 'std' must be 3 numbers"),
        (fields["scale"] in (1, 1.0, 255, 255.0), "'scale' must be 1 or 255"),
        (fields["sampling"] in SAMPLINGS, f"'sampling' must be one of {', '.join(SAMPLINGS)}"),
        (fields["frame_rate"] is None or (isinstance(fields["frame_rate"], (int, float))
                                          and 0 < fields["frame_rate"] <= 1000), "'frame_rate' must be above 0"),
        (_whole(fields["frame_interval"], 1, 1000), "'frame_interval' must be from 1 to 1000"),
        (_whole(fields["clip_len"], 1, 1024), "'clip_len' must be from 1 to 1024"),
        (_whole(fields["clips"], 1, 1000), "'clips' must be from 1 to 1000"),
        (fields["crops"] in (1, 3), "'crops' must be 1 or 3"),
    ]
    return next((message for ok, message in checks if not ok), None)


TORCHVISION = Preset()  # torchvision's VideoClassification preset and video-level protocol


def torchvision_preset(clip_len=16):
    return dataclasses.replace(TORCHVISION, clip_len=clip_len)


def mmaction_csn_preset(mean, std):
    """The test pipeline of mmaction2's CSN configs: SampleFrames(32, 2, 10, test_mode),
    Resize(-1, 256), ThreeCrop(256), the data preprocessor's mean and std on 0-255."""
    return Preset(resize=None, short_side=256, interpolation="opencv", crop=256, mean=mean, std=std, scale=255.0,
                  sampling="mmaction", frame_rate=None, frame_interval=2, clip_len=32, clips=10, crops=3)


IMAGENET_MEAN_255, IMAGENET_STD_255 = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)   # _base_/models/ircsn_r152.py
VMZ_MEAN_255, VMZ_STD_255 = (110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195)  # the vmz/sports1m configs
CSN_IG65M = mmaction_csn_preset(IMAGENET_MEAN_255, IMAGENET_STD_255)
CSN_VMZ = mmaction_csn_preset(VMZ_MEAN_255, VMZ_STD_255)
