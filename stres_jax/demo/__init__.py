"""A short sample clip shipped with the package, for a first run with no video at hand."""
from pathlib import Path

DEMO_CLIP = Path(__file__).with_name("bigbuckbunny.mp4")
CREDIT = "Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0 (stres_jax/demo/LICENSE.txt)"
