"""Exports of a net that run without stres_jax: ONNX graphs and jax.export artefacts."""
