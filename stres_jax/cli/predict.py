"""`stres-jax predict`: the main action of videos, their top-k labels, and the action over time."""
import json
import sys

import jax

from stres_jax.cli.options import add_cpu_library_flag, add_model_flags, add_overwrite_flag, bounded_int, frame_rate, positive_int
from stres_jax.data import sampling
from stres_jax.data.workers import DecodeWorkers
from stres_jax.errors import UserError
from stres_jax.inference import ClipRunner
from stres_jax.loader import ModelOptions, load_net
from stres_jax.predict import format_text, predict_video
from stres_jax.runtime.atomic import check_output


def register(subparsers):
    parser = subparsers.add_parser(
        "predict", help="identify the main action in videos",
        description="Identify the main action in each video. By default the net's own test protocol "
        "(its preset: for the 18-layer nets torchvision's, resample to 15 fps, 5 clips of 16 frames spread "
        "over the video; for the CSN nets mmaction2's, 10 clips of 32 frames each in 3 crops), softmax averaged. "
        "Prints the top-1 label per video; one bad video never stops the others.")
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (none: the demo clip shipped "
                        "with the package, 5 s of Big Buck Bunny)")
    add_model_flags(parser)
    parser.add_argument("--top", type=positive_int, default=1, metavar="K", help="show the K most likely labels")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: a list with one object per video, in order (an `error` entry for a bad one)")
    parser.add_argument("--clips", type=bounded_int(sampling.MAX_CLIPS), 
                        help=f"clips per video, 1 to {sampling.MAX_CLIPS} (default: the net's preset, 5 for the "
                        "18-layer nets, 10 for the CSN ones)")
    parser.add_argument("--crops", type=int, choices=(1, 3), help="spatial crops per clip: 1 (the preset's centre) "
                        "or 3 (left, centre, right; multi-view testing) (default: the net's preset, 1 or 3)")
    parser.add_argument("--clip-len", type=bounded_int(sampling.MAX_CLIP_LEN), help=f"frames per clip, at most "
                        f"{sampling.MAX_CLIP_LEN} (default: the net's, "
                        f"{sampling.CLIP_LEN} for the 18-layer nets, 8 or 32 for the IG-65M ones)")
    parser.add_argument("--frame-rate", type=frame_rate,
                        help=f"resample to this many frames/s before cutting clips, up to {sampling.MAX_FRAME_RATE:g} "
                        f"(default: the net's preset, {sampling.FRAME_RATE} for the torchvision nets; 0: native)")
    parser.add_argument("--target-length", type=bounded_int(sampling.MAX_CLIP_LEN), metavar="N", help="instead: one clip of N "
                        "frames spread over the whole video (faster with small N: the speed/accuracy knob)")
    parser.add_argument("--window", type=bounded_int(sampling.MAX_CLIP_LEN), metavar="W", help="also label windows "
                        f"of W video frames, at most {sampling.MAX_CLIP_LEN} (the action over time)")
    parser.add_argument("--stride", type=bounded_int(sampling.MAX_STRIDE), metavar="S",
                        help="frames between window starts (default W)")
    parser.add_argument("--plot", metavar="FILE.png", help="with --window and one VIDEO: draw the action over "
                        "time: a thumbnail per window with its label, and the leading classes' probabilities as curves")
    parser.add_argument("--batch-size", type=positive_int, help="clips per forward pass (default: 1 on CPU, "
                        "where larger batches only cost memory, about 240 MB a clip; 8 elsewhere)")
    add_overwrite_flag(parser)
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    if not args.videos:
        from stres_jax.demo import CREDIT, DEMO_CLIP
        print(f"stres-jax: no VIDEO given: predicting the demo clip {DEMO_CLIP} ({CREDIT})", file=sys.stderr)
        args.videos = [str(DEMO_CLIP)]
    if args.stride and not args.window:
        raise UserError("--stride S spaces the windows of --window W: add --window W (or drop --stride)")
    if args.plot and (not args.window or len(args.videos) != 1):
        raise UserError("--plot draws the windows of one video: give one VIDEO and --window W")
    if args.plot:
        check_output(args.plot, "png", args.overwrite, args.videos, "--plot")  # before the work
    batch_size = args.batch_size or (1 if jax.default_backend() == "cpu" else 8)
    runner = ClipRunner(load_net(ModelOptions.from_args(args)), batch_size)
    plan = sampling.ClipPlan.of(runner.model.preset, args.clips, args.clip_len, args.frame_rate, args.crops,
                                target_length=args.target_length, window=args.window, stride=args.stride)
    progress = sys.stderr.isatty()
    results = []
    try:
        with DecodeWorkers(1) as workers:  # a decoder crash or hang costs one video, not the command
            predict_each(args, runner, plan, progress, workers, results)
    except KeyboardInterrupt:  # Ctrl-C: the answers so far, the other videos marked interrupted
        results += [{"video": path, "error": "interrupted"} for path in args.videos[len(results):]]
        print("stres-jax: interrupted", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(results, indent=1))  # always a list, one entry per VIDEO in order
    if any(r.get("error") == "interrupted" for r in results):
        return 130
    return 1 if any("error" in r for r in results) else 0


def predict_each(args, runner, plan, progress, workers, results):
    """Predict each of `args.videos` in turn, appending its answer (or error) to `results`."""
    for path in args.videos:
        try:
            result = predict_video(runner, path, plan, args.top, progress, plot=args.plot, workers=workers,
                                   overwrite=args.overwrite)
        except UserError as err:
            result = {"video": path, "error": str(err).removeprefix(f"{path}: ")}
        results.append(result)  # before any message: after it, an interrupt no longer costs this answer
        if "error" in result:
            print(f"stres-jax: error: {path}: {result['error']}", file=sys.stderr)
        if args.plot and "error" not in result:
            print(f"wrote {args.plot}", file=sys.stderr)  # stderr: stdout may be JSON
        if args.format == "text" and "error" not in result:
            print(format_text(result, args.top), flush=True)
