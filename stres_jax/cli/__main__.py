import sys

from stres_jax.cli import main

sys.exit(main())
