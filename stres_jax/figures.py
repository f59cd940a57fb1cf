"""Pictures: the stem's filters, a summary diagram of the net, the action over time."""
import numpy as np
from matplotlib.figure import Figure  # no pyplot: drawing here never changes the caller's backend
from matplotlib.patches import Rectangle

from stres_jax.runtime.atomic import PNG_METADATA, output_path


def stem_kernels(variables):
    """The stem's kernels: {"conv": (t, h, w, 3, 64)} for 3D and Mixed, {"spatial": (1, 7, 7, 3, 45),
    "temporal": (3, 1, 1, 45, 64)} for (2+1)D."""
    stem = variables["params"]["stem"]
    return {name: np.asarray(stem[name]["kernel"]) for name in ("conv", "spatial", "temporal") if name in stem}


def filter_images(kernel):
    """(filters, time, height, width, 3) images in [0, 1], contrast-adjusted per filter."""
    images = np.transpose(kernel, (4, 0, 1, 2, 3))
    low = images.min(axis=(1, 2, 3, 4), keepdims=True)
    high = images.max(axis=(1, 2, 3, 4), keepdims=True)
    return (images - low) / np.maximum(high - low, 1e-12)


def filter_mosaic(images, columns, gap=2, step_gap=1):
    """One RGB picture: a grid of filters, each one's time steps side by side (1 px apart),
    filters `gap` px apart on white."""
    filters, frames, height, width, _ = images.shape
    cell_w, cell_h = frames * width + (frames - 1) * step_gap + gap, height + gap
    rows = -(-filters // columns)
    mosaic = np.ones((rows * cell_h - gap, columns * cell_w - gap, 3))
    for f in range(filters):
        top, left = (f // columns) * cell_h, (f % columns) * cell_w
        for t in range(frames):
            x = left + t * (width + step_gap)
            mosaic[top: top + height, x: x + width] = images[f, t]
    return mosaic


def save_filters(variables, path, overwrite=False):
    """The stem's filters: for 3D and Mixed 64 filters, each with its 3 time steps side by side;
    for (2+1)D the 45 spatial 7x7 filters and the temporal kernels (64 x 3 steps x 45 inputs)."""
    kernels = stem_kernels(variables)
    if "conv" in kernels:
        images = filter_images(kernels["conv"])
        fig = Figure(figsize=(12, 9))
        ax = fig.subplots()
        ax.imshow(filter_mosaic(images, columns=8, gap=4), interpolation="nearest")
        ax.set_title(f"{images.shape[0]} stem filters of {images.shape[2]}x{images.shape[3]}, each shown "
                     f"as its {images.shape[1]} time steps left to right (contrast per filter)")
        ax.axis("off")
        return _save(fig, path, overwrite)
    spatial, temporal = filter_images(kernels["spatial"]), kernels["temporal"][:, 0, 0]  # (3, 45, 64)
    fig = Figure(figsize=(15, 7))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    left.imshow(filter_mosaic(spatial, columns=9), interpolation="nearest")
    left.set_title(f"spatial half: {spatial.shape[0]} filters of 1x7x7 (RGB, contrast per filter)")
    left.axis("off")
    table = np.concatenate([np.pad(temporal[t].T, ((0, 0), (0, 2)), constant_values=np.nan)
                            for t in range(temporal.shape[0])], axis=1)[:, :-2]  # (64, 3 x 45 + gaps)
    limit = np.nanmax(np.abs(table))
    shown = right.imshow(table, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest", aspect="auto")
    inputs = temporal.shape[1]
    right.set_xticks([t * (inputs + 2) + inputs / 2 - 0.5 for t in range(temporal.shape[0])],
                     [f"time step {t + 1}\n(45 inputs)" for t in range(temporal.shape[0])])
    right.set_ylabel("output filter")
    right.set_title(f"temporal half: {temporal.shape[2]} filters of 3x1x1 over the 45 spatial outputs")
    fig.colorbar(shown, ax=right, fraction=0.04, label="weight")
    return _save(fig, path, overwrite)


def save_summary(info, path, overwrite=False):
    """A column of boxes: input, stem, every block (kernel shapes, output size), pool, fc."""
    rows = [("input", "x".join(map(str, info["input"])), "")]
    for block, kernels in info["kernel_sizes"].items():
        output = next(l["output"] for l in reversed(info["layers"]) if l["path"].startswith(block + "/"))
        rows.append((block, "  ".join("x".join(map(str, k)) for k in kernels), "x".join(map(str, output))))
    rows += [("global average pool", "", "512"), ("fc", "", str(info["layers"][-1]["output"][0]))]
    fig = Figure(figsize=(8, 0.55 * len(rows) + 1))
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(rows), 1)
    ax.axis("off")
    for i, (name, kernels, output) in enumerate(rows):
        y = -i
        color = "#dde8f6" if name.startswith("layer") else "#eeeeee"
        ax.add_patch(Rectangle((0.2, y - 0.4), 9.6, 0.8, color=color, ec="#555555"))
        ax.text(0.4, y, name, va="center", fontsize=9, weight="bold")
        ax.text(3.2, y, kernels, va="center", fontsize=8, family="monospace")
        ax.text(9.6, y, output, va="center", ha="right", fontsize=8)
    ax.set_title(f"{info['arch']}: {info['total_params']:,} parameters, {info['gmacs']} GMACs/clip\n"
                 "block | kernel shapes (time x height x width) | output (T x H x W x C)", fontsize=9)
    _save(fig, path, overwrite)


def save_action_strip(frames, windows, path, title="", columns=10, overwrite=False):
    """The action over time: one thumbnail per window (the middle frame the net saw) with its
    time, top label and probability under it, `columns` per row."""
    fig = Figure(figsize=(1.9 * min(columns, len(frames)), 2.35 * -(-len(frames) // columns) + 0.5))
    _draw_strip(fig, frames, windows, columns)
    fig.suptitle(title or f"the action over {len(frames)} windows", fontsize=10)
    _save(fig, path, overwrite)


def save_action_curve(windows, curves, path, title="", overwrite=False):
    """The action over time as curves: `curves` {label: probability per window}, drawn at each
    window's middle."""
    fig = Figure(figsize=(8, 3.2))
    _draw_curves(fig, windows, curves)
    fig.suptitle(title or "probability over time", fontsize=10)
    _save(fig, path, overwrite)


def save_action_over_time(frames, windows, curves, path, title="", columns=10, overwrite=False):
    """The strip (for a talk) above the curves (for a paper), in one picture."""
    rows = -(-len(frames) // columns)
    fig = Figure(figsize=(max(8, 1.9 * min(columns, len(frames))), 2.35 * rows + 3.6))
    strip, curve = fig.subfigures(2, 1, height_ratios=[2.35 * rows + 0.4, 3.2])
    _draw_strip(strip, frames, windows, columns)
    _draw_curves(curve, windows, curves)
    fig.suptitle(title or f"the action over {len(frames)} windows", fontsize=10)
    _save(fig, path, overwrite)


def window_curves(windows, probs, labels, top_label, most=5):
    """{label: probabilities (windows,)} of the classes that lead some window, and the video's top
    class, the `most` highest peaks first: what a curve over time should show."""
    leaders = {top_label, *(w["label"] for w in windows)}
    index = {label: labels.index(label) for label in leaders}
    chosen = sorted(leaders, key=lambda label: -float(np.max(probs[:, index[label]])))[:most]
    return {label: np.asarray(probs[:, index[label]], dtype=float) for label in chosen}


def _draw_strip(fig, frames, windows, columns):
    count = len(frames)
    columns = max(1, min(columns, count))
    axes = fig.subplots(-(-count // columns), columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, frame, window in zip(axes.ravel(), frames, windows):
        ax.imshow(frame)
        label = window["label"] if len(window["label"]) <= 22 else window["label"][:21] + "\u2026"
        ax.set_title(f"{window['start']:.1f}-{window['end']:.1f} s", fontsize=8, pad=2)
        ax.text(0.5, -0.04, f"{label}\n{window['probability']:.2f}", transform=ax.transAxes,
                ha="center", va="top", fontsize=8)
    fig.subplots_adjust(hspace=0.55, wspace=0.08)


def _draw_curves(fig, windows, curves):
    ax = fig.subplots()
    middles = [(w["start"] + w["end"]) / 2 for w in windows]
    for label, probs in curves.items():
        ax.plot(middles, probs, marker="o", markersize=3, label=label)
    ax.set_xlabel("time (s), middle of each window")
    ax.set_ylabel("probability")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def save_cam(clip, cam, path, title, frames=8, overwrite=False):
    """`frames` of a uint8 clip (T, H, W, 3), evenly spaced, with a Grad-CAM map (T', H', W')
    upsampled over them (jet, half transparent)."""
    from stres_jax.explain import upsample_cam
    heat = upsample_cam(cam, clip.shape[:3])
    shown = np.linspace(0, len(clip) - 1, frames).round().astype(int)
    fig = Figure(figsize=(1.8 * frames, 4.0))
    axes = fig.subplots(2, frames)
    for column, t in enumerate(shown):
        for row in range(2):
            axes[row, column].imshow(clip[t])
            axes[row, column].axis("off")
        axes[1, column].imshow(heat[t], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, column].set_title(f"frame {t + 1}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    _save(fig, path, overwrite)


def _save(fig, path, overwrite=False):
    """A PNG marked as stres_jax's (its Software field), so that a rerun may replace it."""
    with output_path(path, "png", overwrite) as staging:
        fig.savefig(staging, format="png", dpi=100, bbox_inches="tight", metadata=PNG_METADATA)
