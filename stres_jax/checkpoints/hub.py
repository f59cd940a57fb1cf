"""Checkpoint folders in Hugging Face's layout: `config.json` + `model.safetensors`, read and written
alike by the linen API (`save_pretrained`, `load_checkpoint`) and the NNX one (`stres_jax.nnx`).

`model.safetensors` is flat: one float32 tensor per variable, named by its Flax path joined with
dots, collection first: `params.stem.spatial.kernel` (kt, kh, kw, in, out),
`params.layer2_0.downsample_bn.scale`, `batch_stats.layer1_0.bn1.mean`, `params.fc.kernel`
(512, classes). A folded net (`batchnorm_folded` in config.json) has convs with a `bias` and no
BatchNorm entries. `hf://owner/repo` names a repository on the Hub (or in its local cache).
"""
import json
from pathlib import Path

import numpy as np
from flax import traverse_util

from stres_jax.errors import UserError
from stres_jax.models.preset import Preset
from stres_jax.runtime.atomic import check_space, output_path

CONFIG_FILE, WEIGHTS_FILE, HUB_FORMAT = "config.json", "model.safetensors", "stres_jax-hub-1"


def is_hub_folder(directory):
    directory = Path(directory)
    return (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def save_hub_folder(directory, arch, variables, labels, batchnorm_folded=False, overwrite=False, inputs=(),
                    source=None, preset=None):
    """Write `variables` ({"params", "batch_stats"?}) and their config to `directory`, atomically
    (replacing only a stres_jax result there: `runtime.atomic.output_path`). `preset`: the
    weights' test protocol (default: the arch's)."""
    from safetensors.numpy import save_file
    from stres_jax.models import ARCH_SPECS
    preset = preset or ARCH_SPECS[arch].preset
    flat = {".".join(path): np.ascontiguousarray(np.asarray(value, np.float32))
            for path, value in traverse_util.flatten_dict(dict(variables)).items()}
    config = {"format": HUB_FORMAT, "arch": arch, "num_classes": len(labels), "labels": list(labels),
              "clip_len": preset.clip_len, "preset": preset.to_json(), "preprocessing": preset.preprocessing(),
              "batchnorm_folded": bool(batchnorm_folded), "library": "stres_jax", **({"source": source} if source else {})}
    check_space(directory, sum(value.nbytes for value in flat.values()) + (1 << 20))
    with output_path(directory, "folder", overwrite, inputs) as staging:
        staging.mkdir()
        save_file(flat, str(staging / WEIGHTS_FILE), metadata={"format": HUB_FORMAT, "arch": arch})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return Path(directory).absolute()


def save_pretrained(variables, meta, directory, overwrite=False):
    """The linen side of `stres_jax.nnx.save_pretrained`: `variables` (BN folded or not) with the
    arch and labels of `meta` (as `load_checkpoint` returns it) into a Hub-layout folder."""
    return save_hub_folder(directory, meta["arch"], variables, meta["labels"], "batch_stats" not in variables, overwrite,
                           source=meta.get("source") or None, preset=preset_of(meta))


def preset_of(meta):
    """The test protocol of a checkpoint's meta: its `preset`, or (written before presets travelled)
    its arch's with its `clip_len`."""
    from stres_jax.models import ARCH_SPECS
    if isinstance(meta.get("preset"), Preset):
        return meta["preset"]
    if "preset" in meta:
        return Preset.from_json(meta["preset"], meta.get("arch"))
    return ARCH_SPECS[meta["arch"]].preset.replace(clip_len=meta.get("clip_len"))


def check_meta(meta, path, hint):
    """A checkpoint's meta (meta.json, or a Hub folder's config.json) as this package reads it, or a
    one-line UserError naming the file and the key."""
    from stres_jax.models import ARCH_SPECS
    if not isinstance(meta, dict):
        raise UserError(f"{path}: holds a {type(meta).__name__}, not an object; {hint}")
    for key in ("arch", "num_classes", "labels"):
        if key not in meta:
            raise UserError(f"{path}: missing key {key!r}; {hint}")
    arch, count, labels = meta["arch"], meta["num_classes"], meta["labels"]
    if not isinstance(arch, str) or arch not in ARCH_SPECS:
        raise UserError(f"{path}: key 'arch' is {arch!r:.60}, not one of {', '.join(ARCH_SPECS)}; {hint}")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100_000:
        raise UserError(f"{path}: key 'num_classes' is {count!r:.40}, not a whole number from 1 to 100000; {hint}")
    if not isinstance(labels, list) or len(labels) != count or not all(isinstance(x, str) for x in labels):
        shown = f"{len(labels)} entries" if isinstance(labels, list) else type(labels).__name__
        raise UserError(f"{path}: key 'labels' must be a list of {count} strings (num_classes), it has {shown}; {hint}")
    clip_len = meta.get("clip_len", ARCH_SPECS[arch].clip_len)
    if not isinstance(clip_len, int) or isinstance(clip_len, bool) or not 1 <= clip_len <= 4096:
        raise UserError(f"{path}: key 'clip_len' is {clip_len!r:.40}, not a whole number from 1 to 4096; {hint}")
    if not isinstance(meta.get("source", {}), dict):
        raise UserError(f"{path}: key 'source' must be an object; {hint}")
    if "preset" in meta:
        preset = Preset.from_json(meta["preset"], path)
        if preset.clip_len != clip_len:
            raise UserError(f"{path}: key 'clip_len' is {clip_len}, but its 'preset' has {preset.clip_len}; {hint}")
    if "batchnorm_folded" in meta and not isinstance(meta["batchnorm_folded"], bool):
        raise UserError(f"{path}: key 'batchnorm_folded' must be true or false; {hint}")
    return meta


def read_hub_config(directory):
    """config.json of a Hub-layout folder, as a checkpoint's meta ({"arch", "num_classes", "labels", ...})."""
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable ({err}); save the folder again with save_pretrained") from None
    hint = "save one with stres_jax.save_pretrained or `stres-jax convert --format safetensors`"
    if not isinstance(config, dict) or config.get("format") != HUB_FORMAT:
        shown = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise UserError(f"{path}: not a stres_jax folder (format {shown!r:.40}); {hint}")
    check_meta(config, path, hint)
    return {**config, "source": {**config.get("source", {}), "hub_folder": str(Path(directory).absolute())}}


def read_hub_folder(directory):
    """(meta, variables) of a Hub-layout folder."""
    from safetensors.numpy import load_file
    meta = read_hub_config(directory)
    try:
        flat = load_file(str(Path(directory) / WEIGHTS_FILE))
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise UserError(f"{Path(directory) / WEIGHTS_FILE}: unreadable ({err})") from None
    return meta, traverse_util.unflatten_dict({tuple(key.split(".")): value for key, value in flat.items()})


def hub_snapshot(name):
    """The local folder of `hf://owner/repo[@revision]`: downloaded through huggingface_hub, or
    from its cache when offline (HF_HUB_OFFLINE=1)."""
    repo, _, revision = name.removeprefix("hf://").partition("@")
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(f"{name}: reading from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(huggingface_hub.snapshot_download(repo, revision=revision or None,
                                                      allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except Exception as err:  # noqa: BLE001 (offline, unknown repo, no cache: all one line)
        raise UserError(f"{name}: not on the Hub or in its cache ({type(err).__name__}); check the name, go "
                        "online, or download the folder and pass its path") from None
