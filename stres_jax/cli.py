"""`stres-jax`: one command line over the package's entry points; each subcommand lives in its module."""
import argparse
import importlib
import sys

from stres_jax.errors import UserError

# Modules with `register(subparsers)`, which adds their subcommands and sets `func`.
COMMAND_MODULES = ("stres_jax.convert", "stres_jax.predict", "stres_jax.labels", "stres_jax.inspect",
                   "stres_jax.onnx_io", "stres_jax.embed")


def run_guarded(fn):
    """Call `fn`; a UserError becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as err:
        print(f"stres-jax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stres-jax: interrupted", file=sys.stderr)
        return 130


def build_parser():
    parser = argparse.ArgumentParser(
        prog="stres-jax",
        description="Spatiotemporal ResNet-18 action recognition (Kinetics-400) in JAX: "
        "3D (r3d_18), Mixed (mc3_18) and (2+1)D (r2plus1d_18), numerically identical to torchvision.",
        epilog="Run `stres-jax COMMAND --help` for the options of one command.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
