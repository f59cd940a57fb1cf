from stres_jax.train.program import run

run()
