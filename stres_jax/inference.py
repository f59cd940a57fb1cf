"""Run a net on clips: one jitted function, batches split into power-of-two sizes (few compiles)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stres_jax.data.transforms import normalize
from stres_jax.xla_options import DEFAULT_CPU_LIBRARY, compiler_options


def batch_sizes(count, max_batch):
    """Split `count` into full batches of `max_batch` and a power-of-two remainder: 13, 8 -> 8, 4, 1."""
    sizes = [max_batch] * (count // max_batch)
    remainder = count % max_batch
    bit = 1 << max(remainder.bit_length() - 1, 0)
    while remainder:
        if remainder >= bit:
            sizes.append(bit)
            remainder -= bit
        bit >>= 1
    return sizes


@dataclasses.dataclass
class ClipRunner:
    """Per-clip softmax probabilities and pooled 512-d features of a loaded net."""
    model: object
    variables: dict
    labels: list
    batch_size: int = 8
    cpu_library: str = DEFAULT_CPU_LIBRARY  # stres_jax.xla_options

    def __post_init__(self):
        def forward(variables, clips):
            logits, features = self.model.apply(variables, clips, return_features=True)
            return jax.nn.softmax(logits.astype(jnp.float32)), features["pre_logits"]
        self._forward = jax.jit(forward, compiler_options=compiler_options(self.cpu_library))

    def run(self, clips_uint8):
        """`(N, T, 112, 112, 3)` uint8 (resized and cropped) -> (probabilities, features)."""
        probabilities, features, start = [], [], 0
        for size in batch_sizes(len(clips_uint8), self.batch_size):
            batch = normalize(np.asarray(clips_uint8[start:start + size]))
            p, f = self._forward(self.variables, batch)
            probabilities.append(np.asarray(p))
            features.append(np.asarray(f))
            start += size
        if not probabilities:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 512), np.float32)
        return np.concatenate(probabilities), np.concatenate(features)

    def top(self, probabilities, k):
        """[{"label", "probability"}] of the `k` largest entries of a probability vector."""
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [{"label": self.labels[i], "probability": float(probabilities[i])} for i in order]
