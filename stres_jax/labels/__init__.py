"""Class names: Kinetics-400's (the published nets' outputs, in order) and label files."""
from importlib import resources
from pathlib import Path

from stres_jax.errors import UserError


def kinetics400_labels():
    """The 400 Kinetics class names, in the order of the published nets' outputs."""
    text = resources.files(__package__).joinpath("kinetics400.txt").read_text()
    return [line for line in text.splitlines() if line]


def read_label_file(path, num_classes):
    """Class names, one per line, from `path`; Kinetics-400's for a 400-way head when None.
    `num_classes=None`: as many as the file has."""
    if path is None:
        return kinetics400_labels() if num_classes == 400 else [f"class_{i}" for i in range(num_classes)]
    try:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise UserError(f"{path}: cannot read the label file ({err.strerror})") from None
    if num_classes is not None and len(labels) != num_classes:
        raise UserError(f"{path}: {len(labels)} labels, but the checkpoint's head has {num_classes} outputs")
    return labels
