from stres_jax.eval.program import run

run()
