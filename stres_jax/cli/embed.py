"""`stres-jax embed`: 512-d embeddings of videos or Kinetics-layout folders, as an .npz."""
import json
import sys

from stres_jax.cli.options import add_cpu_library_flag, add_model_flags, add_overwrite_flag, bounded_int, positive_int
from stres_jax.config.base import get_base_config
from stres_jax.data import sampling
from stres_jax.embed import embed, items_for, save_npz, store_items
from stres_jax.errors import UserError
from stres_jax.loader import ModelOptions, load_net
from stres_jax.runtime.atomic import check_output


def register(subparsers):
    parser = subparsers.add_parser(
        "embed", help="512-d embeddings of videos or a Kinetics-layout folder",
        description="Write an .npz with `embeddings` (N, 512) float32 (pooled pre-logit features "
        "averaged over the protocol's 5 clips), `paths` and, for folders, `labels` (the folder "
        "names). Plain arrays: loads with allow_pickle=False. Unreadable videos are listed and skipped.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="videos, or folders of videos at any depth (a top folder names the label)")
    parser.add_argument("--store", metavar="DIR", help="embed the videos of a clip store (`stres-jax prepare`) "
                        "instead; `paths` are their source paths")
    parser.add_argument("--out", required=True, metavar="FILE.npz")
    add_model_flags(parser)
    parser.add_argument("--workdir", help="keep per-video results here; a rerun with the same net and "
                        "protocol resumes, anything else is refused (default: temporary)")
    parser.add_argument("--fresh", action="store_true", help="delete the workdir's earlier results first")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--clips", type=bounded_int(sampling.MAX_CLIPS), 
                        help=f"clips per video, 1 to {sampling.MAX_CLIPS} (default: the net's preset, 5 or 10)")
    parser.add_argument("--window", type=bounded_int(sampling.MAX_CLIP_LEN), metavar="W", help="also embed windows "
                        f"of W video frames, at most {sampling.MAX_CLIP_LEN} (the windows of `predict --window`): "
                        "window_embeddings, window_video, window_start/end")
    parser.add_argument("--stride", type=bounded_int(sampling.MAX_STRIDE), metavar="S",
                        help="frames between window starts (default W)")
    parser.add_argument("--crops", type=int, choices=(1, 3), help="spatial crops per clip, 1 or 3 (default: the "
                        "net's preset)")
    add_overwrite_flag(parser)
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    if args.stride and not args.window:
        raise UserError("--stride S spaces the windows of --window W: add --window W (or drop --stride)")
    net = load_net(ModelOptions.from_args(args))  # once, for the clips and the windows
    config = ModelOptions.from_args(args, arch=net.arch).write_to(get_base_config(net.arch))
    config.batch_size, config.fresh = args.batch_size, args.fresh
    config.protocol.clips_per_video = args.clips or net.preset.clips
    config.protocol.crops = args.crops or net.preset.crops
    if bool(args.paths) == bool(args.store):
        raise UserError("name the videos: PATH arguments, or --store DIR")
    items = store_items(args.store) if args.store else items_for(args.paths)
    if not items:
        raise UserError("no videos found in the given paths")
    inputs = [*args.paths, *([args.store] if args.store else [])]
    check_output(args.out, "npz", args.overwrite, inputs)  # before the work: refused at once
    arrays, skipped = embed(items, config, args.workdir, net)
    if arrays is None:
        return 0
    if args.window:
        from stres_jax.data.workers import DecodeWorkers
        from stres_jax.embed import window_embeddings
        from stres_jax.inference import ClipRunner
        runner = ClipRunner(net, batch_size=args.batch_size)
        plan = sampling.ClipPlan.of(net.preset, crops=1, window=args.window, stride=args.stride)
        with DecodeWorkers(1) as workers:
            windows, failed = window_embeddings(runner, arrays["paths"], plan, sys.stderr.isatty(), workers)
        arrays.update(windows)
        skipped = skipped + failed
    save_npz(arrays, args.out, args.overwrite, inputs)
    for entry in skipped:
        print(f"stres-jax: skipped {entry['reason']}", file=sys.stderr)
    print(json.dumps({"out": args.out, "videos": len(arrays["paths"]), "skipped": len(skipped)}))
    return 1 if skipped else 0
