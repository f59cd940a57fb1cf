"""Checkpoint directories: orbax variables plus meta.json; written atomically, loaded with clear errors."""
import json
from pathlib import Path

import jax
from flax import traverse_util

from stres_jax.runtime.atomic import check_space, output_path
from stres_jax.runtime.quiet import quiet_absl
from stres_jax.errors import UserError, first_line
from stres_jax.models import ARCH_SPECS, create_model
from stres_jax.models.init import abstract_variables
from stres_jax.checkpoints.hub import (check_meta, hub_snapshot, is_hub_folder, preset_of, read_hub_config,
                                      read_hub_folder)

FORMAT_VERSION = 1
META_FILE = "meta.json"
VARIABLES_DIR = "variables"


class CheckpointError(UserError, ValueError):
    """A checkpoint directory that is missing, partial or from an incompatible version."""


def _checkpointer():
    """A checkpointer of this process alone (numpy variables, written by one process: no barrier
    with the others, which in a multi-process training run are not saving)."""
    import orbax.checkpoint as ocp  # imported here: slow to import, and only needed for I/O
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def save_checkpoint(directory, arch, variables, labels, source=None, overwrite=False, inputs=(), preset=None):
    """Write `variables` and their metadata to `directory` atomically; it replaces only an earlier
    stres_jax result there (`runtime.atomic.output_path`). `preset`: the weights' test protocol
    (default: the arch's)."""
    preset = preset or ARCH_SPECS[arch].preset
    check_space(directory, sum(leaf.nbytes for leaf in jax.tree.leaves(variables)) + (1 << 20))
    with output_path(directory, "folder", overwrite, inputs) as staging, quiet_absl():  # orbax logs a failed
        #  save's traceback before raising it (a full disk): the raise is reported, in one line
        checkpointer = _checkpointer()
        checkpointer.save(staging / VARIABLES_DIR, variables)
        checkpointer.wait_until_finished()
        meta = {"format_version": FORMAT_VERSION, "arch": arch, "num_classes": len(labels),
                "labels": list(labels), "clip_len": preset.clip_len, "preset": preset.to_json(),
                "preprocessing": preset.preprocessing(), "source": source or {}}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    return Path(directory).absolute()


def checkpoint_dir(name):
    """The directory `name` names: a path, `hf://owner/repo` (a Hub-layout folder on the Hub or in
    its cache), or an arch name (`r2plus1d_18`, `3D`, ...) that is not a folder here, for the
    checkpoint `stres-jax fetch ARCH` cached."""
    from stres_jax.models import canonical_arch
    if str(name).startswith("hf://"):
        return hub_snapshot(str(name))
    if not Path(name).exists():
        from stres_jax.checkpoints.fetch import CSN_CHECKPOINTS
        try:
            arch = name if name in CSN_CHECKPOINTS else canonical_arch(name)
        except ValueError:
            return Path(name)
        from stres_jax.checkpoints.fetch import default_checkpoint_dir
        cached = default_checkpoint_dir(arch)
        if not cached.is_dir():
            raise CheckpointError(f"no {arch} checkpoint cached; run `stres-jax fetch {arch}` "
                                  f"(offline: `stres-jax fetch {arch} --from FILE.pth`)")
        return cached
    return Path(name)


def read_meta(directory):
    """The checkpoint's metadata, checked for presence and version (`directory` as `checkpoint_dir`)."""
    directory = checkpoint_dir(directory)
    hint = ("make one with `stres-jax fetch ARCH`, `stres-jax convert --checkpoint FILE.pth --arch ARCH --out DIR` "
            "or, offline, `stres-jax convert --random-init --arch ARCH --out DIR`")
    if directory.is_file():
        from stres_jax.checkpoints.fetch import PUBLISHED_FILES
        published = {Path(name).name: arch for arch, name in PUBLISHED_FILES.items()}
        fetch = (f" or `stres-jax fetch {published[directory.name]} --from {directory}`"
                 if directory.name in published else "")  # fetch --from takes only the published files
        raise CheckpointError(f"{directory}: a file, not a checkpoint directory; a PyTorch .pth becomes "
                              f"one with `stres-jax convert --checkpoint {directory} --arch ARCH --out DIR`{fetch}")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory; {hint}")
    if is_hub_folder(directory):
        return read_hub_config(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{directory}: not a stres_jax checkpoint (no {META_FILE}); {hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: unreadable ({first_line(err)}); {hint}") from None
    if isinstance(meta, dict) and meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: checkpoint format {meta.get('format_version')!r:.40}, but this stres_jax "
            f"reads format {FORMAT_VERSION}; convert the source checkpoint again")
    try:
        return check_meta(meta, meta_path, hint)
    except UserError as err:
        raise CheckpointError(str(err)) from None


def load_checkpoint(directory, fold_batchnorm=False, **model_kwargs):
    """`(model, variables, meta)` from a checkpoint directory, or from the one `stres-jax fetch`
    cached for an arch name (`load_checkpoint("r2plus1d_18")`); kwargs (conv_impl, dtype, ...)
    go to `create_model`. `fold_batchnorm=True` gives a faster inference-only net whose convs
    absorb the BatchNorms (logits within 1e-6 relative; no `train=True`)."""
    directory = checkpoint_dir(directory).absolute()
    meta = read_meta(directory)
    model = create_model(meta["arch"], num_classes=meta["num_classes"], **{"preset": preset_of(meta), **model_kwargs})
    loader = _load_hub_folder if is_hub_folder(directory) else _load_orbax_folder
    model, variables, meta = loader(directory, model, meta, fold_batchnorm, model_kwargs)
    # On the device once: a jitted call copies numpy leaves in again on every call (ir-CSN-152's
    # 120 MB, 6% of a clip's forward on 2 cores).
    return model, jax.device_put(variables), meta


def _load_orbax_folder(directory, model, meta, fold_batchnorm, model_kwargs):
    """`load_checkpoint` of an orbax checkpoint folder (`variables/` + meta.json)."""
    if not (directory / VARIABLES_DIR).is_dir():
        raise CheckpointError(f"{directory}: the {VARIABLES_DIR}/ folder is missing (partial copy?)")
    try:
        abstract = abstract_variables(model)
        variables = _checkpointer().restore(directory / VARIABLES_DIR, abstract)
    except Exception as err:  # orbax raises many types for missing or mismatched files
        raise CheckpointError(
            f"{directory}: variables are incomplete or do not fit {meta['arch']} ({first_line(err)})") from None
    _check_shapes(directory, meta["arch"], variables, abstract)
    if fold_batchnorm:
        from stres_jax.models.fold import fold_batchnorm as fold
        variables = fold(variables, model.spec)
        model = create_model(meta["arch"], num_classes=meta["num_classes"], fold_batchnorm=True, **model_kwargs)
    return model, variables, meta


def _load_hub_folder(directory, model, meta, fold_batchnorm, model_kwargs):
    """`load_checkpoint` of a Hub-layout folder (its config.json is `meta`, read again with the
    weights); a folded one gives a folded net."""
    meta, variables = read_hub_folder(directory)
    folded = meta.get("batchnorm_folded", False)
    if folded or fold_batchnorm:
        model = create_model(meta["arch"], num_classes=meta["num_classes"], fold_batchnorm=True, **model_kwargs)
    if fold_batchnorm and not folded:
        from stres_jax.models.fold import fold_batchnorm as fold
        variables = fold(variables, model.spec)  # the same ArchSpec, folded or not
    want = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(abstract_variables(model)).items()}
    got = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(variables).items()}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise CheckpointError(f"{directory}: variables do not fit {meta['arch']}: {name} is "
                                  f"{got.get(name, 'missing')}, the net needs {want.get(name, 'nothing')}")
    return model, variables, meta


def _check_shapes(directory, arch, variables, abstract):
    """orbax restores a stored array whatever shape the target asks for: check every leaf."""
    for (path, value), expected in zip(jax.tree_util.tree_leaves_with_path(variables),
                                       jax.tree.leaves(abstract)):
        if value.shape != expected.shape:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            raise CheckpointError(f"{directory}: variables do not fit {arch}: {name} has shape "
                                  f"{value.shape}, the net needs {expected.shape}")
