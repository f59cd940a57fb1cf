from stres_jax.cli.eval import run

run()
