"""Where evaluation videos come from: a Kinetics-layout folder, Kinetics CSV annotations, or TFDS."""
import csv
import dataclasses
import functools
from pathlib import Path

from stres_jax.data.tfds_videos import tfds_examples
from stres_jax.errors import UserError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"}


@dataclasses.dataclass(frozen=True)
class VideoItem:
    key: str                   # unique and stable: the path, or tfds:<name>/<split>/<index>
    label: str | None = None   # class name in the model's label set
    load: object = None        # for in-memory sources: () -> (frames (T, H, W, 3) uint8, fps)


def normalise_name(name):
    return " ".join(name.replace("_", " ").split()).lower()


def _label_lookup(labels):
    return {normalise_name(label): label for label in labels}


def _match(name, lookup, where, strict=True):
    try:
        return lookup[normalise_name(name)]
    except KeyError:
        if not strict:
            return name
        raise UserError(f"{where}: class {name!r} is not one of the model's labels; rename it, or "
                        "use a checkpoint whose labels include it") from None


def folder_source(root, labels, strict=True):
    """`root/<class name>/<video>`: classes matched to `labels` by name (spaces or underscores).

    With `strict=False` a class outside `labels` keeps its folder name (for embeddings).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; the data root must be a folder of <class>/<video> folders")
    lookup, items = _label_lookup(labels), []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = _match(class_dir.name, lookup, class_dir, strict)
        items += [VideoItem(str(f), label) for f in sorted(class_dir.iterdir())
                  if f.suffix.lower() in VIDEO_SUFFIXES]
    if not items:
        raise UserError(f"{root}: no videos found in <class>/<video> folders")
    return items


def csv_source(csv_path, root, labels, split="", strict=True):
    """Kinetics annotations: files `<youtube_id>_<start:06d>_<end:06d>.mp4` in root or root/<label>/."""
    lookup, items, root = _label_lookup(labels), [], Path(root)
    try:
        with open(csv_path, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError as err:
        raise UserError(f"{csv_path}: cannot read ({err.strerror})") from None
    needed = {"label", "youtube_id", "time_start", "time_end"}
    if rows and not needed <= set(rows[0]):
        raise UserError(f"{csv_path}: needs columns {sorted(needed)}, has {sorted(rows[0])}")
    for line, row in enumerate(rows, start=2):
        if split and row.get("split", split) != split:
            continue
        label = _match(row["label"], lookup, f"{csv_path}:{line}", strict)
        name = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}.mp4"
        candidates = [root / row["label"] / name, root / row["label"].replace(" ", "_") / name, root / name]
        path = next((p for p in candidates if p.exists()), candidates[0])
        items.append(VideoItem(str(path), label))
    return items


def tfds_source(name, split, labels, fps, data_dir=""):
    """A TFDS video dataset (e.g. ucf101/ucf101_1), each label matched to the model's by name.

    Labels outside the model's set (or all, with `labels=None`) keep the dataset's names (for
    probes; they never count as hits).
    """
    split = split or "test"
    names, example_labels, load = tfds_examples(name, split, data_dir)
    lookup = _label_lookup(labels or [])
    def matched(label):
        return None if label is None else lookup.get(normalise_name(names[label]), names[label])
    return [VideoItem(f"tfds:{name}/{split}/{index}", matched(label),
                      functools.partial(lambda i: (load(i), fps), index))
            for index, label in enumerate(example_labels)]


def check_data(data, block="data"):
    """A UserError for a `data` block that names no videos (before any model is loaded)."""
    needed = {"folder": "root", "csv": "csv", "tfds": "tfds_name"}
    if data.source not in needed:
        raise UserError(f"unknown {block}.source {data.source!r}; use 'folder', 'csv' or 'tfds'")
    if not data[needed[data.source]]:
        raise UserError(f"{block}.{needed[data.source]} is empty: set --config.{block}.{needed[data.source]}=... "
                        f"to say where the {data.source} source's videos are")


def make_source(data, labels):
    """The VideoItems a config's `data` block names, labels matched to `labels` (None: the
    data's own class names, as training uses them)."""
    check_data(data)
    strict = labels is not None
    if data.source == "folder":
        items = folder_source(data.root, labels or [], strict)
    elif data.source == "csv":
        items = csv_source(data.csv, data.root, labels or [], data.split, strict)
    elif data.source == "tfds":
        items = tfds_source(data.tfds_name, data.split, labels, data.tfds_fps, data.tfds_data_dir)
    return items[: data.max_videos] if data.max_videos else items
