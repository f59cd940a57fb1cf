"""Where videos come from: a Kinetics-layout folder, Kinetics CSV annotations, TFDS, or a clip
store (`data.store`). Each is a `Source` registered under its `data.source` name: it checks its
config block, lists its VideoItems, says its identity (for the workdir checks) and gives each
item a reader (`data.readers`). Adding a source is a Source subclass with `@register` in this
module (its reader in `data.readers` or beside its format) and its config field in `config.base`."""
import csv
import dataclasses
from pathlib import Path

import tqdm

from stres_jax.data.readers import FileReader, LoadingReader, TfdsExampleReader
from stres_jax.models.preset import TORCHVISION
from stres_jax.data.store import RESIZE, SkippedReader, StoreReader, open_store
from stres_jax.data.tfds_videos import tfds_examples
from stres_jax.errors import UserError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"}


@dataclasses.dataclass(frozen=True)
class VideoItem:
    key: str                   # unique and stable: the path, or tfds:<name>/<split>/<index>
    label: str | None = None   # class name in the model's label set
    reader: object = None      # where its frames are read (data.readers); None: the file at `key`

    def __post_init__(self):
        if self.reader is None:
            object.__setattr__(self, "reader", FileReader(self.key))


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
        raise UserError(f"{root}: no videos found in <class>/<video> folders (eval and training take their labels "
                        "from the class folders; features, embed and prepare also take flat folders)")
    return items


def video_tree(root, labels, strict=False):
    """Every video under `root`, at any depth (a flat folder too; hidden entries skipped, folder
    links followed once): its label is its top folder's name, matched to `labels` as
    `folder_source` does, or None for a video in `root` itself."""
    import os
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give a folder of videos (flat or in sub-folders) or video files")
    lookup, items, seen = _label_lookup(labels), [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        top = Path(folder).relative_to(root).parts[:1]
        label = _match(top[0], lookup, root / top[0], strict) if top else None
        items += [VideoItem(str(Path(folder) / f), label) for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    if not items:
        raise UserError(f"{root}: no videos found (looked for {', '.join(sorted(VIDEO_SUFFIXES))} at any depth)")
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
        try:
            start, end = (int(float(row[key])) for key in ("time_start", "time_end"))
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{csv_path}:{line}: time_start {row['time_start']!r} / time_end {row['time_end']!r}: "
                            "expected whole seconds; fix that row") from None
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
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
    return [VideoItem(key, matched(label), LoadingReader(key, _bind(load, index), fps))
            for index, label in enumerate(example_labels) for key in [f"tfds:{name}/{split}/{index}"]]


def _bind(load, index):
    return lambda: load(index)


SOURCES = {}

def register(cls):
    """Class decorator: make a Source subclass available as `data.source = cls.name`."""
    SOURCES[cls.name] = cls()
    return cls


class Source:
    """One kind of video source, chosen by `data.source`."""
    name = ""
    needs = ""        # the config key that must be set
    fields = ()       # the config keys that say which videos (its identity)
    paths = ()        # those of `fields` that are paths (made absolute in the identity)

    def items(self, data, labels, strict):
        """The VideoItems, labels matched to `labels` (`strict`: a class outside them is an error)."""
        raise NotImplementedError

    def identity(self, data):
        """What names these videos, for a workdir's run.json."""
        return {"source": self.name, **{key: str(Path(data[key]).absolute()) if key in self.paths and data[key]
                                        else data[key] for key in self.fields}}

    def check_plan(self, data, plan):
        """A UserError when these videos cannot give `plan`'s clips (a store made at another rate)."""

    def training_items(self, data):
        """(VideoItems with labels as the data's class names, class names) for training."""
        items = self.items(data, None, False)
        return items, sorted({item.label for item in items})


@register
class FolderSource(Source):
    name, needs, fields, paths = "folder", "root", ("root",), ("root",)

    def items(self, data, labels, strict):
        return folder_source(data.root, labels or [], strict)


@register
class CsvSource(Source):
    name, needs, fields, paths = "csv", "csv", ("csv", "root", "split"), ("csv", "root")

    def items(self, data, labels, strict):
        return csv_source(data.csv, data.root, labels or [], data.split, strict)


@register
class TfdsSource(Source):
    name, needs = "tfds", "tfds_name"
    fields, paths = ("tfds_name", "split", "tfds_fps", "tfds_data_dir"), ("tfds_data_dir",)

    def items(self, data, labels, strict):
        return tfds_source(data.tfds_name, data.split, labels, data.tfds_fps, data.tfds_data_dir)

    def training_items(self, data):
        from stres_jax.data.tfds_videos import open_random_access
        split = data.split or "train"
        builder_dir, access, classes = open_random_access(data.tfds_name, split, data.tfds_data_dir)
        count = min(len(access), data.max_videos or len(access))
        items = []
        for index in tqdm.trange(count, desc=f"reading {data.tfds_name}/{split}", unit="video", disable=None):
            key = f"tfds:{data.tfds_name}/{split}/{index}"
            reader = TfdsExampleReader(key, builder_dir, split, index, data.tfds_fps)
            try:
                label = classes[reader.header()[0]]
            except Exception:  # noqa: BLE001 (a damaged record: its probe fails again, and it is skipped)
                label = None
            items.append(VideoItem(key, label, reader))
        return items, classes


@register
class StoreSource(Source):
    """`data.source = "store"`, `data.store = DIR`: the videos of a clip store, named by their source keys."""
    name, needs, fields, paths = "store", "store", ("store",), ("store",)

    def items(self, data, labels, strict):
        store = open_store(data.store)
        lookup = _label_lookup(labels or [])
        return [VideoItem(key, None if name is None else _match(name, lookup, f"{store.root}: {key}", strict),
                          StoreReader(store, i) if isinstance(i, int) else SkippedReader(i))
                for key, name, i in store.source_order()]

    def identity(self, data):
        return {**super().identity(data), "store_identity": open_store(data.store).identity}

    def check_plan(self, data, plan):
        store = open_store(data.store)
        asked = ("clips of a target length" if plan.target_length else "windows in native frames" if plan.window
                 else f"frames at {plan.frame_rate:g} fps" if plan.frame_rate else "frames at the native rate")
        made_for = store.identity.get("preset", TORCHVISION.spatial)  # stores before presets travelled: torchvision's
        if made_for != plan.preset.spatial:
            raise UserError(f"{store.root} holds frames made for the preset {made_for}, but the net's preset is "
                            f"{plan.preset.spatial}; read the videos themselves (data.source folder/csv/tfds)")
        if plan.target_length or plan.window or plan.frame_rate != store.fps \
                or list(store.identity["frame_size"]) != list(RESIZE):
            raise UserError(f"{store.root} holds {store.identity['frame_size'][0]}x{store.identity['frame_size'][1]} "
                            f"frames at {store.fps:g} fps, but the protocol asks for {asked}; use the videos "
                            "themselves (data.source folder/csv/tfds) for this protocol")

    def training_items(self, data):
        return self.items(data, None, False), open_store(data.store).classes


def source_of(data, block="data"):
    """The Source a `data` block names, after checking that the block names some videos."""
    if data.source not in SOURCES:
        raise UserError(f"config.{block}.source = {data.source!r}: must be one of {', '.join(map(repr, SOURCES))}")
    source = SOURCES[data.source]
    if not data.get(source.needs):
        raise UserError(f"{block}.{source.needs} is empty: set --config.{block}.{source.needs}=... "
                        f"to say where the {data.source} source's videos are")
    return source


def check_data(data, block="data"):
    """A UserError for a `data` block that names no videos (before any model is loaded)."""
    source_of(data, block)


def make_source(data, labels, strict=None, any_depth=False):
    """The VideoItems a config's `data` block names, labels matched to `labels` (None: the
    data's own class names; `strict`, default `labels is not None`: a class outside them is an error).
    `any_depth`: a folder source may be flat or nested (`video_tree`: where labels are optional)."""
    source, strict = source_of(data), labels is not None if strict is None else strict
    items = unique_items(video_tree(data.root, labels or [], strict) if any_depth and source.name == "folder"
                         else source.items(data, labels, strict))
    return items[: data.max_videos] if data.max_videos else items


def unique_items(items):
    """`items` with each video once: a file named twice, or reached through two paths (a symlink,
    `./a` and `a`), keeps its first item; one line on stderr says what was left out."""
    import os
    import sys
    seen, kept, repeats = {}, [], []
    for item in items:
        path = getattr(item.reader, "path", None)
        identity = ("file", os.path.realpath(path)) if isinstance(path, str) else ("key", item.key)
        if identity in seen:
            repeats.append(f"{item.key} (as {seen[identity]})")
            continue
        seen[identity] = item.key
        kept.append(item)
    if repeats:
        shown = ", ".join(repeats[:3]) + (f" and {len(repeats) - 3} more" if len(repeats) > 3 else "")
        print(f"stres-jax: {len(repeats)} video(s) named more than once, computed once: {shown}", file=sys.stderr)
    return kept
