"""`stres-jax convert`, `stres-jax fetch` and `python convert_weights.py`: torchvision weights in."""

from stres_jax.cli.options import ARCH_HELP, OneLineParser, add_overwrite_flag, arch_name, checkpoint_name
from stres_jax.checkpoints.fetch import CSN_CHECKPOINTS, PUBLISHED_FILES, FetchError
from stres_jax.convert import convert_file, fetch, random_checkpoint
from stres_jax.errors import UserError

DESCRIPTION = ("Convert a torchvision video ResNet state_dict (.pth, zip or legacy format, or "
               ".safetensors) into a stres_jax checkpoint directory. No torch needed; no pickled "
               "code is run.")


def add_arguments(parser):
    parser.add_argument("--arch", type=arch_name, required=True, help=f"one of {ARCH_HELP}")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="the torchvision state_dict file to convert")
    source.add_argument("--download", action="store_true",
                        help="download torchvision's published weights (sha256-checked, cached)")
    source.add_argument("--random-init", action="store_true",
                        help="torchvision's random initialisation, for trying things offline (every command "
                        "that reads it marks its answers as random)")
    parser.add_argument("--out", help="output directory (default with --download: the cache)")
    parser.add_argument("--labels", help="class names, one per line (default: Kinetics-400)")
    parser.add_argument("--format", choices=("orbax", "safetensors"), default="orbax",
                        help="orbax: a checkpoint directory (default); safetensors: a Hub-layout folder "
                        "(config.json + model.safetensors) that stres_jax.nnx.from_pretrained and load_checkpoint read")
    add_overwrite_flag(parser)
    return parser


def register(subparsers):
    convert = subparsers.add_parser("convert", help="convert a torchvision checkpoint file",
                                    description=DESCRIPTION)
    add_arguments(convert).set_defaults(func=run)
    fetch_parser = subparsers.add_parser(
        "fetch", help="download published weights (torchvision, ig65m-pytorch, mmaction2's CSN) and convert them",
        description="Download the published checkpoint NAME (an arch: torchvision's 18-layer nets, ig65m-pytorch's "
        "R(2+1)D-34, or mmaction2's CSN nets; or one of mmaction2's named CSN checkpoints), sha256-checked, "
        "cached under $STRES_JAX_CACHE (default ~/.cache/stres_jax), and convert it with its preset; later "
        "commands find it there (--checkpoint NAME, or no --checkpoint for an arch).",
        epilog="CSN checkpoints (README, 'CSN'): " + ", ".join(CSN_CHECKPOINTS))
    fetch_parser.add_argument("arch", metavar="NAME", type=checkpoint_name, help=f"one of {ARCH_HELP}, or a CSN "
                              "checkpoint's name")
    fetch_parser.add_argument("--from", dest="source", metavar="FILE.pth",
                              help="convert this local copy of the published file instead of downloading")
    fetch_parser.add_argument("--out", help="output directory (default: the cache)")
    add_overwrite_flag(fetch_parser)
    fetch_parser.set_defaults(func=run_fetch)


def run_fetch(args):
    try:
        out = fetch(args.arch, args.out, args.source, overwrite=args.overwrite)
    except FetchError as err:
        if args.source or args.arch not in PUBLISHED_FILES:
            raise
        raise FetchError(f"{err}; if this machine is offline, download {PUBLISHED_FILES[args.arch].split('/')[-1]} "
                         f"elsewhere and run `stres-jax fetch {args.arch} --from FILE`") from None
    print(f"wrote {out}")
    return 0


def run(args):
    if args.download:
        out = fetch(args.arch, args.out, overwrite=args.overwrite)
    else:
        if not args.out:
            raise UserError(f"--out DIR is required with {'--random-init' if args.random_init else '--checkpoint'}")
        if args.random_init:
            out = random_checkpoint(args.arch, args.out, args.labels, args.format, args.overwrite)
            print(f"wrote {out} (random weights: its answers mean nothing)")
            return 0
        out = convert_file(args.checkpoint, args.arch, args.out, args.labels, args.format, args.overwrite)
    print(f"wrote {out}")
    return 0


def main(argv=None):
    """`python convert_weights.py`."""
    from stres_jax.cli import run_guarded
    parser = add_arguments(OneLineParser(prog="convert_weights.py", description=DESCRIPTION))
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), prog="convert_weights.py")
