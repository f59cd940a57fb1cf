"""Convert torchvision video ResNet checkpoints to stres_jax (orbax) checkpoints. See --help."""
import sys

from stres_jax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
