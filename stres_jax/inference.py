"""The inference core: one forward function for every caller (single device or mesh), top-k,
and `ClipRunner` for uint8 clips. Nets come from `stres_jax.loader.load_net`."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stres_jax.data.views import normalize
from stres_jax.runtime.xla_options import DEFAULT_CPU_LIBRARY, compiler_options


def top_k(probabilities, labels, k):
    """[{"label", "probability"}] of the `k` largest entries of a probability vector."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [{"label": labels[i], "probability": float(probabilities[i])} for i in order]


def forward_fn(model):
    """`(variables, clips) -> {"probabilities": float32 softmax, "features": pooled 512-d}`
    (float32 whatever dtype the net computes in)."""
    def forward(variables, clips):
        logits, features = model.apply(variables, clips, return_features=True)
        return {"probabilities": jax.nn.softmax(logits.astype(jnp.float32)),
                "features": features["pre_logits"].astype(jnp.float32)}
    return forward


def jit_apply(model, return_features=False, cpu_library=DEFAULT_CPU_LIBRARY):
    """`model.apply` jitted with the project's compiler options (1.4-1.9x faster on CPU than a
    plain `jax.jit(model.apply)`): `(variables, clips) -> logits`, or `(logits, features)`; logits
    are float32 whatever dtype the net computes in."""
    def apply(variables, clips):
        out = model.apply(variables, clips, return_features=return_features)
        return (out[0].astype(jnp.float32), out[1]) if return_features else out.astype(jnp.float32)
    return jax.jit(apply, compiler_options=compiler_options(cpu_library))


def jit_forward(model, cpu_library=DEFAULT_CPU_LIBRARY):
    """`forward_fn(model)` jitted with the project's compiler options (the fast CPU kernels)."""
    return jax.jit(forward_fn(model), compiler_options=compiler_options(cpu_library))


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
    """Per-clip softmax probabilities and pooled features of a `loader.LoadedNet`, in
    power-of-two batches (few compiles)."""
    net: object
    batch_size: int = 8

    def __post_init__(self):
        self.model, self.variables, self.labels = self.net.model, self.net.variables, self.net.labels
        self._forward = jit_forward(self.model, self.net.options.cpu_library)

    def run(self, clips_uint8):
        """`(N, T, crop, crop, 3)` uint8 (resized and cropped) -> (probabilities, features)."""
        probabilities, features, start = [], [], 0
        for size in batch_sizes(len(clips_uint8), self.batch_size):
            out = self._forward(self.variables, normalize(np.asarray(clips_uint8[start:start + size]), self.model.preset))
            probabilities.append(np.asarray(out["probabilities"]))
            features.append(np.asarray(out["features"]))
            start += size
        if not probabilities:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, self.model.feature_width), np.float32)
        return np.concatenate(probabilities), np.concatenate(features)

    def top(self, probabilities, k):
        return top_k(probabilities, self.labels, k)
