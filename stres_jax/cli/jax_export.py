"""`stres-jax export-jax`: a `jax.export` artefact that runs without this package."""
from pathlib import Path

from stres_jax.runtime.atomic import check_output, output_path
from stres_jax.cli.options import add_model_flags, add_overwrite_flag, positive_int
from stres_jax.loader import ModelOptions, load_net


def register(subparsers):
    parser = subparsers.add_parser(
        "export-jax", help="write a net as a jax.export artefact (StableHLO, weights inside)",
        description="Write a serialized jax.export artefact: normalised (batch, frames, size, size, 3) "
        "float32 NTHWC clips in (batch symbolic), float32 logits out, BatchNorm folded. It runs with "
        "`jax.export.deserialize(open(FILE, 'rb').read()).call(clips)` and nothing of stres_jax installed; "
        "on CPU with the tap convolutions, on CUDA with XLA's. Labels and preprocessing go to FILE.json.")
    add_model_flags(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="the artefact (e.g. r2plus1d_18.jax)")
    parser.add_argument("--frames", type=positive_int, help="frames per clip (default: the net's clip length, 16 for the 18-layer nets)")
    parser.add_argument("--size", type=positive_int, help="crop height and width (default: the net's preset, 112 "
                        "for the torchvision nets, 256 for the CSN ones)")
    parser.add_argument("--platforms", default="cpu,cuda",
                        help="comma-separated: cpu, cuda, rocm, tpu (default cpu,cuda)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    from stres_jax.errors import UserError
    from stres_jax.export.jax_export import LOWERING, describe, export_net
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    unknown = [p for p in platforms if p not in LOWERING]
    if unknown or not platforms:
        raise UserError(f"--platforms {args.platforms!r}: choose from {', '.join(LOWERING)}")
    sidecar = Path(f"{args.out}.json")
    check_output(args.out, "jax-export", args.overwrite)  # before the work: refused at once
    check_output(sidecar, "json", args.overwrite)
    net = load_net(ModelOptions.from_args(args, fold_batchnorm=False))
    frames, size = args.frames or net.preset.clip_len, args.size or net.preset.crop
    exported = export_net(net, frames, size, platforms)
    with output_path(args.out, "jax-export", args.overwrite) as staging:
        staging.write_bytes(exported.serialize())
    with output_path(sidecar, "json", True) as staging:  # checked above; the artefact beside it is new
        staging.write_text(describe(net, exported, frames, size))
    size = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.0f} MB; {net.arch}, platforms {', '.join(platforms)}) and {sidecar}")
    return 0
