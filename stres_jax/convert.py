"""Port torchvision checkpoints (.pth or .safetensors) to stres_jax checkpoint directories
(`python convert_weights.py`, `stres-jax convert` and `stres-jax fetch` call these)."""
from pathlib import Path

import jax

from stres_jax.checkpoints.fetch import (CSN_CHECKPOINTS, check_published, default_checkpoint_dir, download_published,
                                        published_arch, published_preset, sha256_file)
from stres_jax.checkpoints.key_table import check_shapes, head_key, torch_to_flax
from stres_jax.checkpoints.store import save_checkpoint
from stres_jax.models.init import abstract_variables
from stres_jax.checkpoints.torch_file import read_state_dict
from stres_jax.labels import kinetics400_labels, read_label_file
from stres_jax.runtime.atomic import check_output
from stres_jax.models import canonical_arch, create_model


RANDOM_SOURCE = {"random_init": True}
MAX_CLASSES = 100_000  # a classifier wider than this is not one of these nets'


def convert_file(checkpoint, arch, out, labels_file=None, output_format="orbax", overwrite=False, preset=None):
    """Read, map and save one checkpoint file; returns the output directory: an orbax checkpoint
    directory, or with `output_format="safetensors"` a Hub-layout folder (`checkpoints.hub`).
    `preset`: the weights' test protocol (default: the arch's)."""
    arch = canonical_arch(arch)
    check_output(out, "folder", overwrite, [checkpoint])  # before the work: refused at once
    fitted = {}

    def check(shapes):  # every shape checked against the net before a byte of data is read
        fc = shapes.get(head_key(arch), ())  # the head's size is read from the file
        num_classes = int(fc[0]) if len(fc) == 2 and 1 <= fc[0] <= MAX_CLASSES else 400
        fitted["model"] = model = create_model(arch, num_classes=num_classes)
        fitted["abstract"] = abstract = abstract_variables(model)
        check_shapes(shapes, arch, abstract)
        return sum(leaf.size * 4 for leaf in jax.tree.leaves(abstract)) + 8 * len(shapes)

    state_dict = read_state_dict(checkpoint, check)
    variables = torch_to_flax(state_dict, arch, fitted["abstract"])
    num_classes = fitted["model"].num_classes
    labels = read_label_file(labels_file, num_classes)
    if output_format == "safetensors":
        from stres_jax.checkpoints.hub import save_hub_folder
        return save_hub_folder(out, arch, variables, labels, overwrite=overwrite, inputs=[checkpoint], preset=preset)
    source = {"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
    return save_checkpoint(out, arch, variables, labels, source, overwrite, [checkpoint], preset)


def random_checkpoint(arch, out, labels_file=None, output_format="orbax", overwrite=False):
    """A checkpoint of torchvision's random initialisation (marked `source.random_init`, as
    `--random-init` answers are): a real folder to try every command and example offline."""
    from stres_jax.models.init import torchvision_init
    arch = canonical_arch(arch)
    check_output(out, "folder", overwrite)
    labels = read_label_file(labels_file, None) if labels_file else kinetics400_labels()
    variables = torchvision_init(create_model(arch, num_classes=len(labels)))
    if output_format == "safetensors":
        from stres_jax.checkpoints.hub import save_hub_folder
        return save_hub_folder(out, arch, variables, labels, overwrite=overwrite, source=RANDOM_SOURCE)
    return save_checkpoint(out, arch, variables, labels, RANDOM_SOURCE, overwrite)


def fetch(name, out=None, source=None, timeout=60, overwrite=False):
    """Convert the published weights `name` names (an arch, or one of mmaction2's CSN checkpoints:
    `fetch.CSN_CHECKPOINTS`), downloaded or the local copy `source`, checked by its sha256, into
    `out` (default: the cache later commands read), with their preset; `timeout`: seconds a
    download may wait for the network."""
    name = name if name in CSN_CHECKPOINTS else canonical_arch(name)
    out = out or default_checkpoint_dir(name)
    check_output(out, "folder", overwrite, [source] if source else [])  # before the download
    return convert_file(check_published(name, source) if source else download_published(name, timeout=timeout),
                        published_arch(name), out, overwrite=overwrite, preset=published_preset(name))
