"""`stres-jax export-onnx` and `stres-jax import-onnx`."""
import onnx

from stres_jax.runtime.atomic import check_output, output_path
from stres_jax.checkpoints.store import save_checkpoint
from stres_jax.cli.options import add_model_flags, add_overwrite_flag, positive_int
from stres_jax.loader import ModelOptions, load_net
from stres_jax.export.onnx_io import OPSET, from_onnx, onnx_preset, to_onnx


def register(subparsers):
    export = subparsers.add_parser(
        "export-onnx", help="write a checkpoint as an ONNX model",
        description="Write an ONNX model (opset 17) taking (batch, 3, frames, size, size) float32 "
        "(16x112x112 for the torchvision nets), normalised as the net's preset, and returning logits; labels, "
        "preprocessing constants and the preset are in metadata_props. Checked with onnx.checker.")
    add_model_flags(export, dtype=False)
    export.add_argument("--out", required=True, metavar="FILE.onnx")
    export.add_argument("--frames", type=positive_int, help="clip length fixed in the graph (default: the net's, 16 for the 18-layer nets)")
    export.add_argument("--size", type=positive_int, help="crop height and width fixed in the graph (default: the "
                        "net's preset, 112 for the torchvision nets, 256 for the CSN ones)")
    add_overwrite_flag(export)
    export.set_defaults(func=run_export)
    imp = subparsers.add_parser(
        "import-onnx", help="read an exported ONNX model back into a checkpoint",
        description="Read an ONNX file written by export-onnx back into a checkpoint directory; "
        "labels come from its metadata. Other graphs are refused.")
    imp.add_argument("onnx_file", metavar="FILE.onnx")
    imp.add_argument("--out", required=True, help="checkpoint directory to write")
    add_overwrite_flag(imp)
    imp.set_defaults(func=run_import)


def run_export(args):
    check_output(args.out, "onnx", args.overwrite)  # before the work: refused at once
    net = load_net(ModelOptions.from_args(args, fold_batchnorm=False))
    model = to_onnx(net.arch, net.variables, net.labels, args.frames, args.size, net.preset)
    with output_path(args.out, "onnx", args.overwrite) as staging:
        onnx.save(model, str(staging))
    print(f"wrote {args.out} (opset {OPSET}, IR version {model.ir_version})")
    return 0


def run_import(args):
    check_output(args.out, "folder", args.overwrite, [args.onnx_file])
    arch, variables, labels = from_onnx(args.onnx_file)
    out = save_checkpoint(args.out, arch, variables, labels, {"file": str(args.onnx_file), "format": "onnx"},
                          args.overwrite, [args.onnx_file], preset=onnx_preset(args.onnx_file))
    print(f"wrote {out}")
    return 0
