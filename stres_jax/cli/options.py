"""Options several commands share."""
import argparse

from stres_jax.loader import INFERENCE_DTYPES
from stres_jax.models.conv_impls import CONV_IMPLS
from stres_jax.models import ARCH_SPECS, DEFAULT_ARCH, canonical_arch
from stres_jax.runtime.xla_options import CPU_LIBRARIES, DEFAULT_CPU_LIBRARY

class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line (the usage block is what --help is for); the
    subcommands' parsers are of the same class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


ARCH_HELP = f"{', '.join(ARCH_SPECS)} (or 3D, Mixed, (2+1)D)"


def checkpoint_name(text):
    """argparse type: a published checkpoint's name (mmaction2's CSN ones) or a canonical arch name."""
    from stres_jax.checkpoints.fetch import CSN_CHECKPOINTS
    if text in CSN_CHECKPOINTS:
        return text
    try:
        return canonical_arch(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err}; or one of the published CSN checkpoints: "
                                         f"{', '.join(CSN_CHECKPOINTS)}") from None


def arch_name(text):
    """argparse type: a canonical arch name, or a one-line usage error."""
    try:
        return canonical_arch(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded_int(most, least=1):
    """argparse type: a whole number from `least` to `most` (documented in --help by its users)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(f"must be from {least} to {most:,}, got {value}")
        return value
    return parse


def frame_rate(text):
    """argparse type: frames/s to resample to, finite, from 0 (the native frames) to 1000."""
    from stres_jax.data.sampling import rate_problem
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames/s, got {text!r}") from None
    if rate_problem(value):
        raise argparse.ArgumentTypeError(f"{text}: {rate_problem(value)}")
    return value


def add_model_flags(parser, what="the cached checkpoint or --random-init", dtype=True):
    """--checkpoint, --arch, --random-init and --dtype: the fields of `loader.ModelOptions`."""
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the one `stres-jax fetch` cached)")
    parser.add_argument("--arch", type=arch_name, help=f"{ARCH_HELP}, for {what} (default {DEFAULT_ARCH})")
    parser.add_argument("--random-init", action="store_true", help="use an uninitialised (random) net")
    parser.add_argument("--conv-impl", choices=("auto", *CONV_IMPLS), default="auto",
                        help="how convolutions are computed (same results): auto picks oneDNN on CPU when its "
                        "extension is built, else the 2-D taps; xla elsewhere (`stres-jax info --speed` says which)")
    if dtype:
        parser.add_argument("--dtype", choices=INFERENCE_DTYPES, default="float32",
                            help="compute dtype of the net (softmax and logits stay float32); bfloat16 is "
                            "the accelerators' fast path, and on CPUs with avx512_bf16 (default float32)")


def add_overwrite_flag(parser):
    """`--overwrite`: replace a file at the output path that stres_jax did not write (a folder
    holding anything but a stres_jax result is never replaced)."""
    parser.add_argument("--overwrite", action="store_true", help="replace a file at the output path that "
                        "stres_jax did not write (its own earlier results are replaced without it; a folder "
                        "holding anything else never is)")


def add_cpu_library_flag(parser):
    """`--cpu-library` for a command that runs a net."""
    parser.add_argument("--cpu-library", choices=sorted(CPU_LIBRARIES), default=DEFAULT_CPU_LIBRARY,
                        help="CPU kernels: XLA's own with YNNPACK's reductions (the default, fastest for "
                        "these nets), XLA's alone (xla-only), YNNPACK fusions of each conv with the work "
                        "after it, or jaxlib's default mix")
