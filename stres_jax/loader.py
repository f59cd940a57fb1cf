"""One way to get a net: `ModelOptions` (every model option, in one record, built once from a
config or the command line) and `load_net(options)`, which returns a `LoadedNet`.

Eval, embed, predict, explain, the exports and training all start here, so the next model
option is added in `ModelOptions` alone: its config key, its check, its place in a workdir's
identity and its effect on the loaded net."""
import dataclasses
import sys
from pathlib import Path
from typing import Optional

import jax.numpy as jnp

from stres_jax.checkpoints.fetch import default_checkpoint_dir
from stres_jax.checkpoints.store import load_checkpoint, read_meta
from stres_jax.errors import UserError
from stres_jax.labels import kinetics400_labels
from stres_jax.models import ARCH_SPECS, DEFAULT_ARCH, canonical_arch, create_model
from stres_jax.models.conv_impls import CONV_IMPLS
from stres_jax.models.init import torchvision_init
from stres_jax.runtime.xla_options import CPU_LIBRARIES, DEFAULT_CPU_LIBRARY

INFERENCE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Which net, with which weights, computed how. Field names are the config keys."""
    arch: str = ""              # r3d_18, mc3_18, r2plus1d_18 or an alias; "" = the checkpoint's (or the default)
    checkpoint: str = ""        # checkpoint directory; "" = the one `stres-jax fetch ARCH` cached
    conv_impl: str = "auto"     # conv lowering (models.conv_impls): same parameters, same results to ~1e-6
    cpu_library: str = DEFAULT_CPU_LIBRARY  # CPU kernels (stres_jax.runtime.xla_options)
    fold_batchnorm: bool = True  # fold BN into the convs (inference only; logits within 1e-6)
    dtype: str = "float32"      # compute dtype; "bfloat16": the net in bf16, softmax and logits in float32
    random_init: bool = False   # torchvision's random initialisation instead of any checkpoint (for trying things)

    @classmethod
    def from_config(cls, config):
        """The options a config holds at its top level (keys it lacks keep their defaults)."""
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})

    @classmethod
    def from_args(cls, args, **overrides):
        """The options of a command line (flags it lacks keep their defaults)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if getattr(args, f.name, None) is not None}
        return cls(**{**values, **overrides})

    def write_to(self, config):
        """Set the config's model keys from these options."""
        for field in dataclasses.fields(self):
            if field.name in config:
                config[field.name] = getattr(self, field.name)
        return config

    def identity(self, meta_arch):
        """What of these options changes a run's results (for `workdir.claim_workdir`)."""
        return {"arch": meta_arch, "fold_batchnorm": self.fold_batchnorm, "dtype": self.dtype}


def one_of(*choices):
    """A config rule: the value is one of `choices` (config_check uses it too)."""
    return (lambda value: value in choices), "one of " + ", ".join(repr(c) for c in choices)


def _arch_ok(value):
    try:
        return value == "" or bool(canonical_arch(value))
    except ValueError:
        return False


RULES = {"arch": (_arch_ok, f"one of {', '.join(ARCH_SPECS)} (or 3D, Mixed, (2+1)D)"),
         "conv_impl": one_of("auto", *CONV_IMPLS), "cpu_library": one_of(*sorted(CPU_LIBRARIES)),
         "dtype": one_of(*INFERENCE_DTYPES)}  # fold_batchnorm: ml_collections admits only a bool


@dataclasses.dataclass
class LoadedNet:
    """A net ready to run: the model, its variables and labels, where they came from."""
    model: object
    variables: dict
    labels: list
    directory: Optional[Path]  # the checkpoint directory it was read from; None for random weights
    meta: dict                 # the checkpoint's meta.json ({"arch", ...} for random weights)
    options: ModelOptions

    @property
    def arch(self):
        return self.meta["arch"]

    @property
    def preset(self):
        """The test protocol of its weights (`models.preset.Preset`), which every command follows."""
        return self.model.preset

    @property
    def random_weights(self):
        """Whether the weights are torchvision's random initialisation (its answers mean nothing)."""
        return bool(self.meta.get("source", {}).get("random_init"))


def load_net(options=ModelOptions()):
    """The net `options` ask for: from their checkpoint, the cached one for their arch, or
    torchvision's random initialisation (`options.random_init`). A checkpoint of another arch than an
    explicitly asked one is refused in one line."""
    dtype = jnp.dtype(options.dtype)
    if options.random_init and options.checkpoint:
        raise UserError(f"--random-init (random_init) and --checkpoint {options.checkpoint} exclude each other: "
                        "random weights ignore the checkpoint; drop one of them")
    if options.random_init:
        arch = canonical_arch(options.arch or DEFAULT_ARCH)
        model = create_model(arch, conv_impl=options.conv_impl, dtype=dtype)
        labels = kinetics400_labels()
        meta = {"arch": arch, "num_classes": len(labels), "labels": labels, "source": {"random_init": True}}
        return LoadedNet(model, torchvision_init(model), labels, None, meta, options)
    directory = checked_checkpoint(options)
    model, variables, meta = load_checkpoint(directory, conv_impl=options.conv_impl,
                                             fold_batchnorm=options.fold_batchnorm, dtype=dtype)
    return LoadedNet(model, variables, meta["labels"], Path(directory).absolute(), meta, options)


def checked_checkpoint(options):
    """The checkpoint directory `options` name (or the cached one), its arch checked against an
    explicitly asked one; reads only its meta.json, so it is cheap to call before slow work."""
    directory = options.checkpoint or default_checkpoint(options.arch or DEFAULT_ARCH)
    arch = read_meta(directory)["arch"]
    if options.arch and canonical_arch(options.arch) != arch:
        raise UserError(f"{directory}: holds {arch}, but {canonical_arch(options.arch)} was asked for; "
                        f"set arch to {arch} (or leave it empty) or name a {canonical_arch(options.arch)} checkpoint")
    return directory


def default_checkpoint(arch):
    """The checkpoint directory `stres-jax fetch ARCH` cached, or a UserError saying how to get it."""
    arch = canonical_arch(arch)
    checkpoint = default_checkpoint_dir(arch)
    if checkpoint.is_dir():
        return checkpoint
    from stres_jax.checkpoints.fetch import FetchError, published_file, publisher
    from stres_jax.cache import cache_dir
    from stres_jax.convert import fetch
    filename = published_file(arch)  # a FetchError (one line) for an arch nobody publishes
    if sys.stderr.isatty():  # with the download's progress bar; in a log, one line when it is done
        print(f"stres_jax: no {arch} weights cached: downloading {publisher(arch)}'s {filename}", file=sys.stderr)
    try:
        checkpoint = fetch(arch, timeout=10)  # offline, the one-line answer comes at once, not after a minute
        print(f"stres_jax: downloaded {publisher(arch)}'s {arch} weights into {cache_dir()} (once, as `stres-jax fetch "
              f"{arch}` does)", file=sys.stderr)
        return checkpoint
    except FetchError as err:
        raise UserError(f"no checkpoint given and none cached for {arch}, and {err}: offline, download "
                        f"{filename} elsewhere and run `stres-jax fetch {arch} --from FILE.pth`; "
                        "or pass --random-init to run with random weights, or name a checkpoint directory") from None
