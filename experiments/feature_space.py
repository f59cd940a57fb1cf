"""A 2-D map of video embeddings with each video's middle frame at its point (FeatureSpacePlot).

    stres-jax embed videos/ --out emb.npz
    python experiments/feature_space.py emb.npz --out plot.png [--method tsne]

Points and thumbnail frames are coloured by class (the .npz's `labels`), with a legend.
Relative video paths are found under --root (default: the current directory, then the
.npz's folder); missing thumbnails are counted on stderr.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from stres_jax.runtime.atomic import atomic_path  # noqa: E402
from stres_jax.cli import run_guarded  # noqa: E402
from stres_jax.cli.options import OneLineParser  # noqa: E402
from stres_jax.data.decode import probe, read_frames  # noqa: E402
from stres_jax.embed import load_npz  # noqa: E402
from stres_jax.errors import UserError  # noqa: E402


def project(embeddings, method="pca", seed=0):
    """((N, 2) coordinates, axis names): PCA (with each axis's share of the variance) or t-SNE."""
    if len(embeddings) < 2:
        return np.zeros((len(embeddings), 2)), ("", "")
    if method == "tsne":
        points = TSNE(2, perplexity=min(30.0, len(embeddings) - 1.0), random_state=seed).fit_transform(embeddings)
        return points, ("t-SNE 1", "t-SNE 2")
    pca = PCA(2, random_state=seed).fit(embeddings)
    shares = pca.explained_variance_ratio_
    return pca.transform(embeddings), tuple(f"PC {i + 1} ({shares[i]:.0%} of the variance)" for i in range(2))


def find_video(path, roots):
    """An existing file for `path`: as it is if absolute, else under the first root that has it."""
    path = Path(path)
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    return next((c for c in candidates if c.is_file()), None)


def middle_frame(path, size):
    """The video's middle frame as a thumbnail, or None when it cannot be read."""
    try:
        info = probe(path)
        frame = read_frames(path, [info.num_frames // 2])[0]
    except UserError:
        return None
    image = Image.fromarray(frame)
    image.thumbnail((size, size))
    return np.asarray(image)


def plot(embeddings, paths, labels, out, method="pca", thumb_size=64, roots=(Path("."),)):
    """Draw the map; returns the paths whose thumbnail could not be made."""
    points, axis_names = project(embeddings, method)
    classes = sorted(set(labels))
    palette = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    colour = {c: palette(i % palette.N) for i, c in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(10, 9))
    missing = []
    for name in classes:
        mask = np.asarray([label == name for label in labels])
        ax.scatter(points[mask, 0], points[mask, 1], s=30, color=colour[name], label=name or "(no label)")
    for (x, y), path, label in zip(points, paths, labels):
        found = find_video(path, roots)
        thumb = middle_frame(found, thumb_size) if found else None
        if thumb is None:
            missing.append(str(path))
            continue
        ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=1.0), (x, y), frameon=True, pad=0.15,
                                     bboxprops={"edgecolor": colour[label], "linewidth": 2}))
    ax.margins(0.15)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(f"{len(points)} videos: {method.upper()} of their {embeddings.shape[1]}-d embeddings")
    if len(classes) > 1 or classes[0]:
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    with atomic_path(out) as staging:
        fig.savefig(staging, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return missing


def main(argv=None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings", metavar="EMB.npz")
    parser.add_argument("--out", required=True, metavar="plot.png")
    parser.add_argument("--method", choices=("pca", "tsne"), default="pca")
    parser.add_argument("--thumb-size", type=int, default=64)
    parser.add_argument("--root", type=Path, help="folder that relative video paths are relative to")
    args = parser.parse_args(argv)

    def run():
        data = load_npz(args.embeddings)
        labels = [str(label) for label in data["labels"]] if "labels" in data else [""] * len(data["paths"])
        roots = [args.root] if args.root else [Path("."), Path(args.embeddings).parent]
        missing = plot(data["embeddings"], data["paths"], labels, args.out, args.method, args.thumb_size, roots)
        if missing:
            print(f"feature_space.py: warning: no thumbnail for {len(missing)} of {len(labels)} videos "
                  f"(first: {missing[0]}); pass --root FOLDER if the paths are relative", file=sys.stderr)
        print(f"wrote {args.out}")
        return 0
    return run_guarded(run, prog="feature_space.py")


if __name__ == "__main__":
    sys.exit(main())
