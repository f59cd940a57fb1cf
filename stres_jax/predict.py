"""`stres-jax predict`: the main action of a video, its top-k labels, and the action over time."""
import dataclasses
import json
import sys

import jax
import numpy as np
from tqdm import tqdm

from stres_jax.checkpoints.fetch import default_checkpoint_dir
from stres_jax.checkpoints.store import kinetics400_labels, load_checkpoint
from stres_jax.data import sampling
from stres_jax.data.clips import stream_clips
from stres_jax.data.decode import probe
from stres_jax.errors import UserError
from stres_jax.inference import ClipRunner
from stres_jax.models import ARCH_SPECS, DEFAULT_ARCH, canonical_arch, create_model
from stres_jax.xla_options import DEFAULT_CPU_LIBRARY, add_cpu_library_flag


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a video becomes clips (defaults: torchvision's video-level protocol)."""
    clips: int = sampling.NUM_CLIPS
    clip_len: int = sampling.CLIP_LEN
    frame_rate: float | None = sampling.FRAME_RATE
    target_length: int | None = None  # if set: one clip of this many frames over the whole video
    window: int | None = None         # window length in video frames, for the action over time
    stride: int | None = None

    def main_clips(self, info):
        if self.target_length:
            return sampling.target_length_clip(info.num_frames, self.target_length)
        return sampling.protocol_clips(info.resampled(self.frame_rate), self.clip_len, self.clips)

    def windows(self, info):
        if not self.window:
            return []
        return sampling.windows(info.num_frames, self.window, self.stride or self.window, self.clip_len)


def load_runner(checkpoint=None, arch=None, random_init=False, batch_size=8, conv_impl="auto",
                fold_batchnorm=True, cpu_library=DEFAULT_CPU_LIBRARY):
    """A ClipRunner from a checkpoint dir, the cached `fetch` checkpoint, or random weights."""
    if random_init:
        model = create_model(arch or DEFAULT_ARCH, conv_impl=conv_impl)
        variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 16, 112, 112, 3), np.float32))
        return ClipRunner(model, variables, kinetics400_labels(), batch_size, cpu_library)
    if checkpoint is None:
        arch = canonical_arch(arch or DEFAULT_ARCH)
        checkpoint = default_checkpoint_dir(arch)
        if not checkpoint.is_dir():
            raise UserError(f"no checkpoint given and none cached for {arch}: run `stres-jax fetch "
                            f"{arch}`, pass --checkpoint DIR, or use --random-init")
    model, variables, meta = load_checkpoint(checkpoint, conv_impl=conv_impl, fold_batchnorm=fold_batchnorm)
    return ClipRunner(model, variables, meta["labels"], batch_size, cpu_library)


def predict_video(runner, path, how=Sampling(), top=5, progress=False):
    """{"video", "top", "clips"[, "windows"]} for one video; raises VideoError if unusable."""
    info = probe(path)
    main = how.main_clips(info)
    spans = how.windows(info)
    jobs = [(("main", i), idx) for i, idx in enumerate(main)]
    jobs += [(("window", k), idx) for k, (_, _, idx) in enumerate(spans)]
    main_probs = np.zeros((len(main), len(runner.labels)), np.float32)
    window_probs = np.zeros((len(spans), len(runner.labels)), np.float32)
    last = max(int(idx.max()) for _, idx in jobs)
    with tqdm(total=last + 1, desc=str(path), unit="frame", disable=not progress, leave=False) as bar:
        def advance(index):
            bar.update(index + 1 - bar.n)
        for batch in stream_clips(path, jobs, runner.batch_size, on_frame=advance):
            probabilities, _ = runner.run(np.stack([clip for _, clip in batch]))
            for ((kind, i), _), p in zip(batch, probabilities):
                (main_probs if kind == "main" else window_probs)[i] = p
    result = {"video": str(path), "top": runner.top(main_probs.mean(axis=0), top),
              "clips": len(main), "duration": round(info.duration, 3)}
    if spans:
        result["windows"] = [
            {"start": round(float(info.times[s]), 3),
             "end": round(float(info.times[e]) if e < info.num_frames else info.duration, 3),
             **runner.top(p, 1)[0]}
            for (s, e, _), p in zip(spans, window_probs)]
    return result


def format_text(result, top):
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    best = result["top"][0]
    lines = [f"{result['video']}: {best['label']} ({best['probability']:.3f})"]
    if top > 1:
        lines += [f"  {t['probability']:.4f}  {t['label']}" for t in result["top"]]
    for w in result.get("windows", []):
        lines.append(f"  {w['start']:8.2f}-{w['end']:<8.2f}s {w['label']} ({w['probability']:.2f})")
    return "\n".join(lines)


def register(subparsers):
    parser = subparsers.add_parser(
        "predict", help="identify the main action in videos",
        description="Identify the main action in each video. By default torchvision's video-level "
        "protocol: resample to 15 fps, 5 clips of 16 frames spread over the video, softmax averaged. "
        "Prints the top-1 label per video; one bad video never stops the others.")
    parser.add_argument("videos", nargs="+", metavar="VIDEO")
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the one `stres-jax fetch` cached)")
    parser.add_argument("--arch", help=f"{', '.join(ARCH_SPECS)} (or 3D, Mixed, (2+1)D) for the cached "
                        f"checkpoint or --random-init (default {DEFAULT_ARCH})")
    parser.add_argument("--random-init", action="store_true", help="use an uninitialised (random) net")
    parser.add_argument("--top", type=int, default=1, metavar="K", help="show the K most likely labels")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--clips", type=int, default=sampling.NUM_CLIPS, help="clips per video (default 5)")
    parser.add_argument("--clip-len", type=int, default=sampling.CLIP_LEN, help="frames per clip (default 16)")
    parser.add_argument("--frame-rate", type=float, default=sampling.FRAME_RATE,
                        help="resample to this many frames/s before cutting clips (default 15; 0: native)")
    parser.add_argument("--target-length", type=int, metavar="N", help="instead: one clip of N frames "
                        "spread over the whole video (faster with small N: the speed/accuracy knob)")
    parser.add_argument("--window", type=int, metavar="W", help="also label windows of W video frames "
                        "(the action over time)")
    parser.add_argument("--stride", type=int, metavar="S", help="frames between window starts (default W)")
    parser.add_argument("--batch-size", type=int, help="clips per forward pass (default: 1 on CPU, "
                        "where larger batches only cost memory, about 240 MB a clip; 8 elsewhere)")
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    for name in ("top", "clips", "clip_len", "batch_size", "target_length", "window", "stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    how = Sampling(args.clips, args.clip_len, args.frame_rate or None, args.target_length,
                   args.window, args.stride)
    batch_size = args.batch_size or (1 if jax.default_backend() == "cpu" else 8)
    runner = load_runner(args.checkpoint, args.arch, args.random_init, batch_size,
                         cpu_library=args.cpu_library)
    progress = sys.stderr.isatty()
    results = []
    for path in args.videos:
        try:
            result = predict_video(runner, path, how, args.top, progress)
        except UserError as err:
            result = {"video": path, "error": str(err).removeprefix(f"{path}: ")}
            print(f"stres-jax: error: {err}", file=sys.stderr)
        results.append(result)
        if args.format == "text" and "error" not in result:
            print(format_text(result, args.top), flush=True)
    if args.format == "json":
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 1 if any("error" in r for r in results) else 0
