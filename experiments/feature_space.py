"""A 2-D map of video embeddings with each video's middle frame at its point (FeatureSpacePlot).

    stres-jax embed videos/ --checkpoint ckpt/r2plus1d --out emb.npz
    python experiments/feature_space.py emb.npz --out plot.png [--method tsne]
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from stres_jax.atomic import atomic_path  # noqa: E402
from stres_jax.data.decode import probe, read_frames  # noqa: E402
from stres_jax.errors import UserError  # noqa: E402


def project(embeddings, method="pca", seed=0):
    """(N, 2) coordinates: PCA, or t-SNE for local structure."""
    if len(embeddings) < 2:
        return np.zeros((len(embeddings), 2))
    if method == "tsne":
        return TSNE(2, perplexity=min(30.0, len(embeddings) - 1.0), random_state=seed).fit_transform(embeddings)
    return PCA(2, random_state=seed).fit_transform(embeddings)


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


def plot(embeddings, paths, labels, out, method="pca", thumb_size=64):
    points = project(embeddings, method)
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.scatter(points[:, 0], points[:, 1], s=8, c="#888888")
    for (x, y), path, label in zip(points, paths, labels):
        thumb = middle_frame(path, thumb_size)
        if thumb is not None:
            ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=1.0), (x, y), frameon=False))
        if label:
            ax.annotate(label, (x, y), xytext=(0, -thumb_size * 0.6), textcoords="offset points",
                        ha="center", fontsize=7)
    span = np.ptp(points, axis=0).max() if len(points) else 1.0
    ax.margins(0.15)
    ax.set_title(f"{len(points)} videos, {method.upper()} of {embeddings.shape[1]}-d embeddings (spread {span:.1f})")
    ax.set_xticks([])
    ax.set_yticks([])
    with atomic_path(out) as staging:
        fig.savefig(staging, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings", metavar="EMB.npz")
    parser.add_argument("--out", required=True, metavar="plot.png")
    parser.add_argument("--method", choices=("pca", "tsne"), default="pca")
    parser.add_argument("--thumb-size", type=int, default=64)
    args = parser.parse_args(argv)
    data = np.load(args.embeddings, allow_pickle=False)
    labels = data["labels"] if "labels" in data else [""] * len(data["paths"])
    plot(data["embeddings"], data["paths"], labels, args.out, args.method, args.thumb_size)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
