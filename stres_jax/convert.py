"""Port torchvision checkpoints (.pth or .safetensors) to stres_jax checkpoint directories.

    python convert_weights.py --arch r2plus1d_18 --checkpoint r2plus1d_18-91a641e6.pth --out ckpt/
    python convert_weights.py --arch r2plus1d_18 --download
"""
import argparse
from pathlib import Path

from stres_jax.checkpoints.fetch import sha256_file, default_checkpoint_dir, download_published
from stres_jax.checkpoints.key_table import torch_to_flax
from stres_jax.checkpoints.store import abstract_variables, kinetics400_labels, save_checkpoint
from stres_jax.checkpoints.torch_file import read_state_dict
from stres_jax.errors import UserError
from stres_jax.models import ARCH_SPECS, canonical_arch, create_model


def read_labels(path, num_classes):
    """Class names, one per line, from `path`; Kinetics-400's for a 400-way head."""
    if path is None:
        if num_classes == 400:
            return kinetics400_labels()
        return [f"class_{i}" for i in range(num_classes)]
    labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(labels) != num_classes:
        raise UserError(f"{path}: {len(labels)} labels, but the checkpoint's head has {num_classes} outputs")
    return labels


def convert_file(checkpoint, arch, out, labels_file=None):
    """Read, map and save one checkpoint file; returns the output directory."""
    arch = canonical_arch(arch)
    state_dict = read_state_dict(checkpoint)
    fc = state_dict.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 400
    model = create_model(arch, num_classes=num_classes)
    variables = torch_to_flax(state_dict, arch, abstract_variables(model))
    source = {"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
    return save_checkpoint(out, arch, variables, read_labels(labels_file, num_classes), source)


def fetch(arch, out=None):
    """Download torchvision's published weights for `arch` and convert them."""
    arch = canonical_arch(arch)
    out = out or default_checkpoint_dir(arch)
    return convert_file(download_published(arch), arch, out)


DESCRIPTION = ("Convert a torchvision video ResNet state_dict (.pth, zip or legacy format, or "
               ".safetensors) into a stres_jax checkpoint directory. No torch needed; no pickled "
               "code is run.")


def add_arguments(parser):
    parser.add_argument("--arch", required=True, help=f"one of {', '.join(ARCH_SPECS)} "
                        "(or 3D, Mixed, (2+1)D)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="the torchvision state_dict file to convert")
    source.add_argument("--download", action="store_true",
                        help="download torchvision's published weights (sha256-checked, cached)")
    parser.add_argument("--out", help="output directory (default with --download: the cache)")
    parser.add_argument("--labels", help="class names, one per line (default: Kinetics-400)")
    return parser


def register(subparsers):
    convert = subparsers.add_parser("convert", help="convert a torchvision checkpoint file",
                                    description=DESCRIPTION)
    add_arguments(convert).set_defaults(func=run)
    fetch_parser = subparsers.add_parser(
        "fetch", help="download torchvision's published weights and convert them",
        description="Download torchvision's published checkpoint for ARCH (sha256-checked, "
        "cached under $XDG_CACHE_HOME/stres_jax) and convert it; later commands find it there.")
    fetch_parser.add_argument("arch", help=f"one of {', '.join(ARCH_SPECS)} (or 3D, Mixed, (2+1)D)")
    fetch_parser.add_argument("--out", help="output directory (default: the cache)")
    fetch_parser.set_defaults(func=run_fetch)


def run_fetch(args):
    print(f"wrote {fetch(args.arch, args.out)}")
    return 0


def run(args):
    if args.download:
        out = fetch(args.arch, args.out)
    else:
        if not args.out:
            raise UserError("--out DIR is required with --checkpoint")
        out = convert_file(args.checkpoint, args.arch, args.out, args.labels)
    print(f"wrote {out}")
    return 0


def main(argv=None):
    from stres_jax.cli import run_guarded
    parser = add_arguments(argparse.ArgumentParser(prog="convert_weights.py", description=DESCRIPTION))
    return run_guarded(lambda: run(parser.parse_args(argv)))
