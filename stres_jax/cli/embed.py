"""`stres-jax embed`: 512-d embeddings of videos or Kinetics-layout folders, as an .npz."""
import json
import sys

from stres_jax.checkpoints.store import read_meta
from stres_jax.cli.options import ARCH_HELP, add_cpu_library_flag, arch_name, positive_int
from stres_jax.config_base import get_base_config
from stres_jax.data import sampling
from stres_jax.embed import embed, items_for, save_npz
from stres_jax.errors import UserError
from stres_jax.models import DEFAULT_ARCH


def register(subparsers):
    parser = subparsers.add_parser(
        "embed", help="512-d embeddings of videos or a Kinetics-layout folder",
        description="Write an .npz with `embeddings` (N, 512) float32 (pooled pre-logit features "
        "averaged over the protocol's 5 clips), `paths` and, for folders, `labels` (the folder "
        "names). Plain arrays: loads with allow_pickle=False. Unreadable videos are listed and skipped.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="videos, or folders of <class>/<video>")
    parser.add_argument("--out", required=True, metavar="FILE.npz")
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the cached `fetch` one)")
    parser.add_argument("--arch", type=arch_name, help=f"with no --checkpoint: {ARCH_HELP} (default {DEFAULT_ARCH})")
    parser.add_argument("--workdir", help="keep per-video results here; a rerun with the same net and "
                        "protocol resumes, anything else is refused (default: temporary)")
    parser.add_argument("--fresh", action="store_true", help="delete the workdir's earlier results first")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--clips", type=positive_int, default=sampling.NUM_CLIPS,
                        help=f"clips per video (default {sampling.NUM_CLIPS})")
    parser.add_argument("--window", type=positive_int, metavar="W", help="also embed windows of W video frames "
                        "(the windows of `predict --window`): window_embeddings, window_video, window_start/end")
    parser.add_argument("--stride", type=positive_int, metavar="S", help="frames between window starts (default W)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per clip (1 or 3)")
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    config = get_base_config()
    arch = args.arch or (read_meta(args.checkpoint)["arch"] if args.checkpoint else DEFAULT_ARCH)
    config.arch, config.checkpoint, config.batch_size = arch, args.checkpoint or "", args.batch_size
    config.fresh = args.fresh
    config.protocol.clips_per_video = args.clips
    config.protocol.crops = args.crops
    config.cpu_library = args.cpu_library
    items = items_for(args.paths)
    if not items:
        raise UserError("no videos found in the given paths")
    arrays, skipped = embed(items, config, args.workdir)
    if arrays is None:
        return 0
    if args.window:
        from stres_jax.data.workers import DecodeWorkers
        from stres_jax.embed import window_embeddings
        from stres_jax.inference import ClipRunner, load_model
        runner = ClipRunner(*load_model(args.checkpoint, arch), batch_size=args.batch_size, cpu_library=args.cpu_library)
        plan = sampling.ClipPlan(window=args.window, stride=args.stride)
        with DecodeWorkers(1) as workers:
            windows, failed = window_embeddings(runner, arrays["paths"], plan, sys.stderr.isatty(), workers)
        arrays.update(windows)
        skipped = skipped + failed
    save_npz(arrays, args.out)
    for entry in skipped:
        print(f"stres-jax: skipped {entry['reason']}", file=sys.stderr)
    print(json.dumps({"out": args.out, "videos": len(arrays["paths"]), "skipped": len(skipped)}))
    return 1 if skipped else 0
