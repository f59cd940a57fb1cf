"""`stres-jax info` and `stres-jax show-filters`."""
import json
import sys

from stres_jax.cli.options import add_model_flags, add_overwrite_flag
from stres_jax.loader import ModelOptions, load_net
from stres_jax.netinfo import format_information, model_for, net_information


def register(subparsers):
    info = subparsers.add_parser(
        "info", help="parameter counts, layer types, GMACs and kernel sizes of a net",
        description="Net information: per-array element counts, total parameters (batch-norm "
        "statistics separately), layer type counts, multiply-accumulates per 16x112x112 clip and "
        "the kernel shape [time, height, width] of every block's convolutions.")
    info.add_argument("target", metavar="ARCH|CHECKPOINT", nargs="?",
                      help="an arch name or a checkpoint directory (default with --speed: none)")
    info.add_argument("--speed", action="store_true", help="say which convolution lowering and CPU kernels "
                      "run here, and why (oneDNN built or not, CPU instructions, threads)")
    info.add_argument("--format", choices=("text", "json"), default="text")
    info.add_argument("--graphic", metavar="FILE.png", help="also draw a summary diagram of the net")
    add_overwrite_flag(info)
    info.set_defaults(func=run_info)
    filters = subparsers.add_parser(
        "show-filters", help="draw the stem's filters (both halves for (2+1)D)",
        description="Draw the stem's kernels as RGB images, contrast-adjusted per filter: for 3D "
        "and Mixed 64 filters of 7x7, each with its 3 time steps side by side; for (2+1)D the 45 "
        "spatial 7x7 filters and, beside them, the temporal 3x1x1 kernels as a table of weights.")
    add_model_flags(filters, dtype=False)
    filters.add_argument("--out", required=True, metavar="FILE.png")
    add_overwrite_flag(filters)
    filters.set_defaults(func=run_show_filters)


def run_info(args):
    from stres_jax.errors import UserError
    if args.speed:
        from stres_jax.netinfo import speed_report
        print(json.dumps(speed_report(), indent=1) if args.format == "json" else
              "\n".join(f"{key:18s} {value}" for key, value in speed_report().items()))
        if args.target is None:
            return 0
    if args.target is None:
        raise UserError("info needs an ARCH or CHECKPOINT (or --speed)")
    model, arch = model_for(args.target)
    info = net_information(model, arch)
    if args.graphic:  # first: a reader that stops early (`| head`) must not cost the picture
        from stres_jax.figures import save_summary  # matplotlib: imported only when drawing
        save_summary(info, args.graphic, args.overwrite)
        print(f"wrote {args.graphic}", file=sys.stderr)  # stderr: stdout may be JSON
    print(json.dumps(info, indent=1) if args.format == "json" else format_information(info))
    return 0


def run_show_filters(args):
    from stres_jax.figures import save_filters
    net = load_net(ModelOptions.from_args(args, fold_batchnorm=False))
    save_filters(net.variables, args.out, args.overwrite)
    print(f"wrote {args.out}")
    return 0
