"""`stres-jax prepare`: decode a dataset once into a clip store that eval, embed and training read."""
import json
import os

from stres_jax.cli.options import positive_int
from stres_jax.config.base import get_base_config
from stres_jax.data.store import DEFAULT_ENCODING, DEFAULT_QUALITY, ENCODINGS


def register(subparsers):
    parser = subparsers.add_parser(
        "prepare", help="decode videos once into a clip store for fast training and evaluation",
        description="Decode every video once (in bounded worker processes), resample it to 15 fps and "
        "resize whole frames to 128x171 exactly as the eval preset does, and write a clip store that "
        "`--config.data.source=store --config.data.store=STORE` (eval, train) and `embed --store` read. "
        "Killed and started again with the same arguments, it makes only the unfinished shards. "
        "Unreadable videos are named, listed in STORE/skipped.json and make the exit status 1.",
        epilog="Encodings: jpeg (default: about 150 KB per video-second at quality 90, the size that "
        "Kinetics-scale training needs; clips within a few normalised units' hundredths of the videos') "
        "or lossless (zstd, about 5x larger; frames bit-identical to the eval preset's, so eval from the "
        "store equals eval from the videos). BENCHMARKS.md has the measurements.")
    parser.add_argument("root", nargs="?", metavar="ROOT", help="a folder of videos: <class>/<video> (labels for training), flat or nested")
    parser.add_argument("--out", required=True, metavar="STORE", help="the store folder (new, or one to finish)")
    parser.add_argument("--csv", metavar="FILE", help="Kinetics CSV annotations (label,youtube_id,time_start,"
                        "time_end[,split]) of the videos in --root")
    parser.add_argument("--root", dest="csv_root", metavar="DIR", help="where the CSV's videos are")
    parser.add_argument("--tfds", metavar="NAME", help="a TFDS video dataset, e.g. ucf101/ucf101_1")
    parser.add_argument("--split", default="", help="CSV rows of this split / the TFDS split (default: all / test)")
    parser.add_argument("--tfds-fps", type=float, default=25.0, help="frame rate of the TFDS videos (UCF-101: 25)")
    parser.add_argument("--tfds-data-dir", default="", metavar="DIR", help="where TFDS keeps its datasets")
    parser.add_argument("--encoding", choices=ENCODINGS, default=DEFAULT_ENCODING,
                        help=f"how frames are stored (default {DEFAULT_ENCODING}; see below)")
    parser.add_argument("--quality", type=positive_int, default=DEFAULT_QUALITY,
                        help=f"JPEG quality 1-100 (default {DEFAULT_QUALITY})")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="decoding processes (default: one per core)")
    parser.add_argument("--max-videos", type=int, default=0, help="only the first N videos (0: all)")
    parser.add_argument("--process-index", type=int, default=0, help="this host's index, when several hosts "
                        "prepare one store (each takes every Nth shard)")
    parser.add_argument("--process-count", type=positive_int, default=1, help="how many hosts prepare the store")
    parser.set_defaults(func=run)


def data_block(args):
    """The config `data` block the arguments name (the same block eval and training read)."""
    from stres_jax.errors import UserError
    data = get_base_config().data
    chosen = [name for name, value in (("ROOT", args.root), ("--csv", args.csv), ("--tfds", args.tfds)) if value]
    if len(chosen) != 1:
        raise UserError("name the videos once: a folder ROOT, --csv FILE --root DIR, or --tfds NAME")
    if args.csv:
        data.source, data.csv, data.root = "csv", args.csv, args.csv_root or os.path.dirname(args.csv)
    elif args.tfds:
        data.source, data.tfds_name, data.tfds_fps, data.tfds_data_dir = "tfds", args.tfds, args.tfds_fps, args.tfds_data_dir
    else:
        data.source, data.root = "folder", args.root
    data.split, data.max_videos = args.split, max(args.max_videos, 0)
    return data


def run(args):
    from stres_jax.data.prepare import prepare
    skipped = prepare(data_block(args), args.out, args.encoding, args.quality, args.workers,
                      args.process_index, args.process_count)
    print(json.dumps({"out": args.out, "skipped": len(skipped)}))
    return 1 if skipped else 0
