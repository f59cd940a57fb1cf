from stres_jax.cli.train import run

run()
