"""`stres-jax`: one command line over the package; each module here adds its subcommands."""
import os
import sys

from stres_jax.cli import convert, embed, explain, features, jax_export, labels, live, netinfo, onnx_io, predict, prepare
from stres_jax.cli.options import OneLineParser
from stres_jax.errors import UserError, disk_full
from stres_jax.eval import program as eval_program
from stres_jax.runtime.interrupt import Stopped
from stres_jax.runtime.xla_options import use_compilation_cache
from stres_jax.train import program as train_program

COMMANDS = (convert, predict, explain, labels, netinfo, onnx_io, jax_export, embed, features, prepare, live)  # each has register(subparsers)
CONFIG_PROGRAMS = {"eval": eval_program, "train": train_program}  # absl + ml_collections: `python -m stres_jax.NAME`


def run_guarded(fn, prog="stres-jax"):
    """Call `fn`; a UserError becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Stopped as stopped:  # a signal cut the run short; its finished results are kept
        print(f"{prog}: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped (`| head`): quiet, as other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as err:  # a full disk is one line too; anything else is a bug: its traceback
        full = disk_full(err)
        if full is None:
            raise
        print(f"{prog}: error: {full}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)  # at once: orbax's writer threads would print their own tracebacks at exit


def build_parser():
    parser = OneLineParser(
        prog="stres-jax",
        description="Spatiotemporal ResNet-18 action recognition (Kinetics-400) in JAX: "
        "3D (r3d_18), Mixed (mc3_18) and (2+1)D (r2plus1d_18), numerically identical to torchvision.",
        epilog="Run `stres-jax COMMAND --help` for the options of one command.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    for name, program in CONFIG_PROGRAMS.items():  # listed here; parsed by their own flags (`main`)
        subparsers.add_parser(name, help=program.SUMMARY, add_help=False)
    return parser


def main(argv=None):
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `stres-jax` alone: the commands, not an error
        parser.print_help()
        return 0
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[0] in CONFIG_PROGRAMS:  # the same program as `python -m stres_jax.eval` / `train`
        sys.argv = [f"stres-jax {argv[0]}", *argv[1:]]
        return CONFIG_PROGRAMS[argv[0]].run(f"stres-jax {argv[0]}")
    args = parser.parse_args(argv)
    use_compilation_cache()
    return run_guarded(lambda: args.func(args))
