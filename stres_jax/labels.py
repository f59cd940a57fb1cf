"""`stres-jax labels`: the class names the published nets predict."""
from stres_jax.checkpoints.store import kinetics400_labels, read_meta


def register(subparsers):
    parser = subparsers.add_parser("labels", help="list the class names (Kinetics-400 by default)",
                                   description="Print the class names, one per line, in output order.")
    parser.add_argument("--checkpoint", help="list this checkpoint's labels instead")
    parser.set_defaults(func=run)


def run(args):
    labels = read_meta(args.checkpoint)["labels"] if args.checkpoint else kinetics400_labels()
    print("\n".join(labels))
    return 0
