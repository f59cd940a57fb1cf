"""The inference core: load a net (checkpoint, cached checkpoint or random init), one forward
function for every caller (single device or mesh), top-k, and `ClipRunner` for uint8 clips."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stres_jax.checkpoints.fetch import default_checkpoint_dir
from stres_jax.checkpoints.store import load_checkpoint
from stres_jax.data.transforms import normalize
from stres_jax.errors import UserError
from stres_jax.labels import kinetics400_labels
from stres_jax.metrics import top_k
from stres_jax.models import DEFAULT_ARCH, canonical_arch, create_model
from stres_jax.models.init import torchvision_init
from stres_jax.xla_options import DEFAULT_CPU_LIBRARY, compiler_options


def load_model(checkpoint=None, arch=None, random_init=False, conv_impl="auto", fold_batchnorm=True):
    """`(model, variables, labels)` from a checkpoint directory, the one `stres-jax fetch`
    cached for `arch` (when `checkpoint` is None), or random weights (`random_init`)."""
    if random_init:
        model = create_model(arch or DEFAULT_ARCH, conv_impl=conv_impl)
        return model, torchvision_init(model), kinetics400_labels()
    if checkpoint is None:
        checkpoint = default_checkpoint(arch or DEFAULT_ARCH)
    model, variables, meta = load_checkpoint(checkpoint, conv_impl=conv_impl, fold_batchnorm=fold_batchnorm)
    if arch and canonical_arch(arch) != meta["arch"]:
        raise UserError(f"{checkpoint}: holds {meta['arch']}, but {canonical_arch(arch)} was asked for; "
                        "leave the arch out (the checkpoint names its net) or name a matching checkpoint")
    return model, variables, meta["labels"]


def default_checkpoint(arch):
    """The checkpoint directory `stres-jax fetch ARCH` cached, or a UserError saying how to get it."""
    arch = canonical_arch(arch)
    checkpoint = default_checkpoint_dir(arch)
    if not checkpoint.is_dir():
        raise UserError(f"no checkpoint given and none cached for {arch}: run `stres-jax fetch {arch}` "
                        f"(offline: `stres-jax fetch {arch} --from FILE.pth`) or name a checkpoint directory")
    return checkpoint


def forward_fn(model):
    """`(variables, clips) -> {"probabilities": float32 softmax, "features": pooled 512-d}`."""
    def forward(variables, clips):
        logits, features = model.apply(variables, clips, return_features=True)
        return {"probabilities": jax.nn.softmax(logits.astype(jnp.float32)),
                "features": features["pre_logits"].astype(jnp.float32)}
    return forward


def jit_apply(model, return_features=False, cpu_library=DEFAULT_CPU_LIBRARY):
    """`model.apply` jitted with the project's compiler options (1.4-1.9x faster on CPU than a
    plain `jax.jit(model.apply)`): `(variables, clips) -> logits`, or `(logits, features)`."""
    def apply(variables, clips):
        return model.apply(variables, clips, return_features=return_features)
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
    """Per-clip softmax probabilities and pooled features of a loaded net, in power-of-two
    batches (few compiles)."""
    model: object
    variables: dict
    labels: list
    batch_size: int = 8
    cpu_library: str = DEFAULT_CPU_LIBRARY  # stres_jax.xla_options

    def __post_init__(self):
        self._forward = jit_forward(self.model, self.cpu_library)

    def run(self, clips_uint8):
        """`(N, T, 112, 112, 3)` uint8 (resized and cropped) -> (probabilities, features)."""
        probabilities, features, start = [], [], 0
        for size in batch_sizes(len(clips_uint8), self.batch_size):
            out = self._forward(self.variables, normalize(np.asarray(clips_uint8[start:start + size])))
            probabilities.append(np.asarray(out["probabilities"]))
            features.append(np.asarray(out["features"]))
            start += size
        if not probabilities:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 512), np.float32)
        return np.concatenate(probabilities), np.concatenate(features)

    def top(self, probabilities, k):
        return top_k(probabilities, self.labels, k)
