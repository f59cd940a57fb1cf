"""`stres-jax features`: dense window features of every video of a source, one `.npy` per video."""
import json
import sys

from stres_jax.cli.options import add_cpu_library_flag, add_model_flags, bounded_int, frame_rate, positive_int
from stres_jax.data import sampling
from stres_jax.errors import UserError


def register(subparsers):
    parser = subparsers.add_parser(
        "features", help="dense window features of whole videos or datasets, one .npy per video",
        description="Resample each video to --fps (torchvision's rule, as eval), cut a window of --clip-len "
        "frames every --stride frames, pass each through the eval preset and the net, and write each video's "
        "(windows, D) features to OUT/<name>.npy with a line in OUT/index.jsonl. Every device and host works "
        "at once; killed and started again with the same command, only the unfinished videos are redone.",
        epilog="Sources: video files and folders of them (flat like ActivityNet, <class>/<video>, or nested; hidden entries skipped), --csv FILE --root DIR, --tfds NAME --split S, "
        "or --store DIR (a clip store at its 15 fps). Load the result with stres_jax.features.open_features(OUT).")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="video files, or folders of videos at any depth (a top folder names the label)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the features folder (new, or one to finish)")
    parser.add_argument("--csv", metavar="FILE", help="Kinetics CSV annotations of the videos in --root")
    parser.add_argument("--root", dest="csv_root", metavar="DIR", help="where the CSV's videos are")
    parser.add_argument("--tfds", metavar="NAME", help="a TFDS video dataset, e.g. ucf101/ucf101_1")
    parser.add_argument("--split", default="", help="CSV rows of this split / the TFDS split")
    parser.add_argument("--store", metavar="DIR", help="a clip store (`stres-jax prepare`), read at its 15 fps")
    parser.add_argument("--clip-len", type=bounded_int(sampling.MAX_CLIP_LEN),
                        help=f"frames per window, at most {sampling.MAX_CLIP_LEN} (default: the net's, 16)")
    parser.add_argument("--fps", type=frame_rate,
                        help=f"resample to this rate first, up to {sampling.MAX_FRAME_RATE:g} (default: the net's "
                        f"preset, {sampling.FRAME_RATE:g} for the torchvision nets, the native frames for the CSN ones; "
                        "0: the native frames)")
    parser.add_argument("--stride", type=bounded_int(sampling.MAX_STRIDE),
                        help=f"frames between window starts, at most {sampling.MAX_STRIDE:,} (default: --clip-len)")
    parser.add_argument("--layer", choices=("pre_logits", "layer1", "layer2", "layer3", "layer4"),
                        default="pre_logits", help="pooled over time and space (default pre_logits, 512-d)")
    parser.add_argument("--half", action="store_true", help="write float16 arrays (default float32)")
    add_model_flags(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per step over all devices")
    parser.add_argument("--workers", type=positive_int, default=2, help="decoding processes (default 2)")
    parser.add_argument("--num-processes", type=positive_int, default=1, help="processes of a multi-host run")
    parser.add_argument("--process-id", type=int, default=0, help="this process's index in a multi-host run")
    parser.add_argument("--coordinator-address", default="", help="host:port of process 0")
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def feature_items(args):
    """The VideoItems the arguments name (the sources `prepare` reads, or a store)."""
    from stres_jax.cli.prepare import data_block
    from stres_jax.data.sources import make_source
    from stres_jax.embed import items_for, store_items
    chosen = [name for name, value in (("PATH", args.paths), ("--csv", args.csv), ("--tfds", args.tfds),
                                       ("--store", args.store)) if value]
    if len(chosen) != 1:
        raise UserError("name the videos once: PATH arguments, --csv FILE --root DIR, --tfds NAME or --store DIR")
    if args.store:
        if args.fps not in (None, sampling.FRAME_RATE):
            raise UserError(f"--store holds frames at {sampling.FRAME_RATE:g} fps; --fps {args.fps:g} needs the "
                            "videos themselves (give their paths)")
        return store_items(args.store)
    if args.paths:
        return items_for(args.paths)
    args.root, args.max_videos, args.tfds_fps, args.tfds_data_dir = None, 0, 25.0, ""
    return make_source(data_block(args), None)


def run(args):
    import ml_collections

    from stres_jax.features import WindowPlan, extract
    from stres_jax.loader import ModelOptions, load_net
    from stres_jax.runtime.distributed import initialize_distributed
    initialize_distributed(ml_collections.ConfigDict({
        "num_processes": args.num_processes, "process_id": args.process_id,
        "coordinator_address": args.coordinator_address, "cpu_collectives": "gloo"}))
    from stres_jax.runtime.atomic import check_folder
    check_folder(args.out, "--out", [p for p in (*args.paths, args.store, args.csv_root, args.csv) if p])
    items = feature_items(args)
    if not items:
        raise UserError("no videos found in the given paths")
    net = load_net(ModelOptions.from_args(args))
    plan = WindowPlan.of(net.preset, args.clip_len, args.fps, args.stride)
    result = extract(items, args.out, net, plan, args.layer, args.batch_size, args.half, args.workers)
    print(json.dumps({"out": args.out, **result}))
    if result["stopped"]:
        name = "SIGINT" if result["stopped"] == 130 else "SIGTERM"
        from stres_jax.runtime.interrupt import resume_command
        print(f"stres-jax features: stopped by {name} after {result['videos']} videos, each written whole; "
              f"to finish, run the same command again: {resume_command()}", file=sys.stderr)
    return result["stopped"] or (1 if result["errors"] else 0)
