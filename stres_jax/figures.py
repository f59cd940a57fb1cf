"""Pictures: the first convolution's filters, and a summary diagram of the net."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stres_jax.atomic import atomic_path  # noqa: E402


def first_conv_kernel(variables):
    """The stem's first kernel, (time, height, width, 3, filters)."""
    stem = variables["params"]["stem"]
    return np.asarray((stem["spatial"] if "spatial" in stem else stem["conv"])["kernel"])


def filter_images(kernel):
    """(filters, time, height, width, 3) images in [0, 1], contrast-adjusted per filter."""
    images = np.transpose(kernel, (4, 0, 1, 2, 3))
    low = images.min(axis=(1, 2, 3, 4), keepdims=True)
    high = images.max(axis=(1, 2, 3, 4), keepdims=True)
    return (images - low) / np.maximum(high - low, 1e-12)


def save_filters(variables, path, columns=None):
    """A grid of the first convolution's filters; each temporal slice is its own picture."""
    images = filter_images(first_conv_kernel(variables))
    filters, frames = images.shape[:2]
    columns = columns or (9 if frames == 1 else frames * 4)
    tiles = [images[f, t] for f in range(filters) for t in range(frames)]
    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6 + 0.4))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, tile in zip(np.ravel(axes), tiles):
        ax.imshow(tile, interpolation="nearest")
    title = f"{filters} filters of {images.shape[2]}x{images.shape[3]}"
    fig.suptitle(title + (f", {frames} temporal slices each (left to right)" if frames > 1 else ""))
    _save(fig, path)


def save_summary(info, path):
    """A column of boxes: input, stem, every block (kernel shapes, output size), pool, fc."""
    rows = [("input", "x".join(map(str, info["input"])), "")]
    for block, kernels in info["kernel_sizes"].items():
        output = next(l["output"] for l in reversed(info["layers"]) if l["path"].startswith(block + "/"))
        rows.append((block, "  ".join("x".join(map(str, k)) for k in kernels), "x".join(map(str, output))))
    rows += [("global average pool", "", "512"), ("fc", "", str(info["layers"][-1]["output"][0]))]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(rows), 1)
    ax.axis("off")
    for i, (name, kernels, output) in enumerate(rows):
        y = -i
        color = "#dde8f6" if name.startswith("layer") else "#eeeeee"
        ax.add_patch(plt.Rectangle((0.2, y - 0.4), 9.6, 0.8, color=color, ec="#555555"))
        ax.text(0.4, y, name, va="center", fontsize=9, weight="bold")
        ax.text(3.2, y, kernels, va="center", fontsize=8, family="monospace")
        ax.text(9.6, y, output, va="center", ha="right", fontsize=8)
    ax.set_title(f"{info['arch']}: {info['total_params']:,} parameters, {info['gmacs']} GMACs/clip\n"
                 "block | kernel shapes (time x height x width) | output (T x H x W x C)", fontsize=9)
    _save(fig, path)


def _save(fig, path):
    with atomic_path(path) as staging:
        fig.savefig(staging, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
