"""`stres-jax labels`: the class names the nets predict."""
from stres_jax.checkpoints.store import read_meta
from stres_jax.labels import kinetics400_labels


def register(subparsers):
    parser = subparsers.add_parser("labels", help="list the class names (Kinetics-400 by default)",
                                   description="Print the class names, one per line, in output order.")
    parser.add_argument("--checkpoint", help="list this checkpoint's labels instead")
    parser.set_defaults(func=run)


def run(args):
    labels = read_meta(args.checkpoint)["labels"] if args.checkpoint else kinetics400_labels()
    print("\n".join(labels))
    return 0
