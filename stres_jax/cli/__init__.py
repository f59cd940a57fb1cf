"""`stres-jax`: one command line over the package; each module here adds its subcommands."""
import argparse
import os
import sys

from stres_jax.cli import convert, embed, explain, jax_export, labels, netinfo, onnx_io, predict, prepare
from stres_jax.errors import UserError
from stres_jax.xla_options import use_compilation_cache

COMMANDS = (convert, predict, explain, labels, netinfo, onnx_io, jax_export, embed, prepare)  # each has register(subparsers)


def run_guarded(fn, prog="stres-jax"):
    """Call `fn`; a UserError becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped (`| head`): quiet, as other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def build_parser():
    parser = argparse.ArgumentParser(
        prog="stres-jax",
        description="Spatiotemporal ResNet-18 action recognition (Kinetics-400) in JAX: "
        "3D (r3d_18), Mixed (mc3_18) and (2+1)D (r2plus1d_18), numerically identical to torchvision.",
        epilog="Run `stres-jax COMMAND --help` for the options of one command.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `stres-jax` alone: the commands, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    use_compilation_cache()
    return run_guarded(lambda: args.func(args))
