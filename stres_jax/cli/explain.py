"""`stres-jax explain`: Grad-CAM of one clip of a video, as a picture or as numbers."""
import json
from pathlib import Path

import numpy as np

from stres_jax.cli.options import add_model_flags, add_overwrite_flag
from stres_jax.data.clips import plan_clips_of
from stres_jax.data.sampling import ClipPlan
from stres_jax.data.sources import VideoItem
from stres_jax.data.views import normalize
from stres_jax.errors import UserError
from stres_jax.runtime.atomic import check_output
from stres_jax.loader import ModelOptions, load_net
from stres_jax.predict import RANDOM_WEIGHTS, marked
from stres_jax.models.spec import STAGE_NAMES


def register(subparsers):
    parser = subparsers.add_parser(
        "explain", help="where and when the net looks for a class (Grad-CAM)",
        description="Grad-CAM of one clip (of the net's length, 16 frames for the 18-layer nets) of VIDEO (by default the middle one of the 5 "
        "the protocol takes): the activation maps of --layer weighted by the mean gradient of the "
        "class logit, ReLU, divided by the maximum. Draws the clip's frames with the map over them.")
    parser.add_argument("video", metavar="VIDEO")
    add_model_flags(parser)
    parser.add_argument("--label", help="explain this class (default: the clip's top-1)")
    parser.add_argument("--layer", choices=("stem",) + STAGE_NAMES, default="layer4")
    parser.add_argument("--clip-index", type=int, default=2, metavar="I",
                        help="which of the protocol's 5 clips (0-4, default 2: the middle one)")
    parser.add_argument("--out", metavar="FILE.png", help="write the picture here (default: VIDEO's name + .cam.png)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: the map's numbers (T' x H' x W') with the class and probability")
    add_overwrite_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    from stres_jax.explain import grad_cam  # jax-heavy; only this command needs it
    if args.clip_index < 0:
        raise UserError(f"--clip-index must be 0 or more, got {args.clip_index}")
    out = args.out or (args.format == "text" and f"{Path(args.video).name}.cam.png")
    if out:
        check_output(out, "png", args.overwrite, [args.video])  # before the work: refused at once
    net = load_net(ModelOptions.from_args(args, fold_batchnorm=False))  # Grad-CAM needs the BNs
    model, variables, labels = net.model, net.variables, net.labels
    if args.label is not None and args.label not in labels:
        raise UserError(f"--label {args.label!r} is not one of the net's classes (see `stres-jax labels`)")
    plan = ClipPlan.of(net.preset, crops=1)  # the net's protocol, one view per clip
    if args.clip_index >= plan.clips:
        raise UserError(f"--clip-index must be 0-{plan.clips - 1} (the preset's {plan.clips} clips), got {args.clip_index}")
    clip = plan_clips_of(VideoItem(args.video), plan)[args.clip_index]
    cam, label, probabilities = grad_cam(model, variables, normalize(clip, net.preset),
                                         None if args.label is None else labels.index(args.label), args.layer)
    result = {"video": args.video, "label": labels[label], "probability": float(probabilities[label]),
              "layer": args.layer, "clip_index": args.clip_index, "shape": list(cam.shape)}
    if net.random_weights:
        result["weights"] = RANDOM_WEIGHTS
    if args.format == "json":
        print(json.dumps({**result, "cam": np.round(cam, 6).tolist()}))
    if out:
        from stres_jax.figures import save_cam
        save_cam(clip, cam, out, marked(f"{Path(args.video).name}: {labels[label]} ({probabilities[label]:.3f}), "
                                        f"Grad-CAM of {args.layer}, clip {args.clip_index}", result), overwrite=args.overwrite)
    if args.format == "text":
        print(marked(f"{args.video}: {labels[label]} ({probabilities[label]:.3f})", result) + f"; wrote {out}")
    return 0
