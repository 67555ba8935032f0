"""Figures from the plot data, drawn with matplotlib and written atomically as PNG."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.safe_io import atomic_path  # noqa: E402

HISTOGRAM_COLUMNS = 6


def save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def plot_not_applicable(title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, f"{title}: not applicable to this model", ha="center", va="center")
    save_figure(figure, path)


def plot_training(history: list[dict], path: Path) -> None:
    if not history:  # an adopted model was not trained here
        return plot_not_applicable("Training curves", path)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [row["epoch"] for row in history]
    loss_axis.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_axis.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
    for key in ("train_accuracy", "test_accuracy"):
        accuracy_axis.plot(epochs, [row[key] for row in history], marker="o", label=key.replace("_", " "))
    accuracy_axis.set(title="Accuracy", xlabel="epoch", ylabel="top-1")
    accuracy_axis.legend()
    save_figure(figure, path)


def plot_accuracy_vs_size(variants: list[dict], changes: list[dict], path: Path) -> None:
    """Each model's accuracy against its file size; each int8 variant's bar is the 95% interval of its change from
    FP32 (`changes`, in points), drawn from FP32's accuracy."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    fp32 = next(row["accuracy"] * 100 for row in variants if row["variant"] == "fp32")
    intervals = {row["variant"]: (fp32 + row["low"], fp32 + row["high"]) for row in changes}
    for row, marker in zip(variants, "os^Dv*"):  # distinct markers: int8 variants often sit on top of each other
        points = axis.scatter(
            row["size_kb"], row["accuracy"] * 100, s=70, marker=marker, alpha=0.8, label=row["variant"]
        )
        if row["variant"] in intervals:
            low, high = intervals[row["variant"]]
            color = points.get_facecolor()[0]
            axis.errorbar(row["size_kb"], (low + high) / 2, yerr=(high - low) / 2, color=color, capsize=4, alpha=0.6)
    axis.legend()
    axis.set(title="Accuracy vs model size", xlabel="file size (KB)", ylabel="test accuracy (%)")
    axis.annotate(
        "bars: FP32's accuracy plus the change's 95% interval", (0.02, 0.02), xycoords="axes fraction", fontsize=7
    )
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def plot_latency(latency: list[dict], path: Path) -> None:
    """Median latency of every variant in every form, one panel per batch size."""
    batch_sizes = sorted({row["batch_size"] for row in latency})
    variants = list(dict.fromkeys(row["variant"] for row in latency))
    forms = list(dict.fromkeys(row["form"] for row in latency))
    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(5 * len(batch_sizes), 3.8), squeeze=False)
    height = 0.8 / len(forms)
    for axis, batch_size in zip(axes[0], batch_sizes):
        for offset, form in enumerate(forms):
            times = {
                row["variant"]: row["latency_ms"]
                for row in latency
                if row["batch_size"] == batch_size and row["form"] == form
            }
            positions = [i + offset * height for i, name in enumerate(variants) if name in times]
            axis.barh(positions, [times[name] for name in variants if name in times], height=height, label=form)
        axis.set_yticks([i + 0.4 - height / 2 for i in range(len(variants))], variants)
        axis.invert_yaxis()
        axis.set(title=f"Latency at batch {batch_size}", xlabel="median ms per batch")
    axes[0][0].legend(fontsize=8)
    save_figure(figure, path)


def plot_confusions(confusions: dict[str, list[dict]], int8_title: str, path: Path) -> None:
    """Confusion matrices side by side, from per-image rows of actual and predicted class."""
    figure, axes = plt.subplots(1, len(confusions), figsize=(5 * len(confusions), 4.5))
    for axis, (name, rows) in zip(axes, confusions.items()):
        counts = [[0] * 10 for _ in range(10)]
        for row in rows:
            counts[row["actual"]][row["predicted"]] += 1
        axis.imshow(counts, cmap="Blues")
        for actual in range(10):
            for predicted in range(10):
                axis.text(predicted, actual, counts[actual][predicted], ha="center", va="center", fontsize=6)
        axis.set(
            title="FP32" if name == "fp32" else int8_title,
            xlabel="predicted",
            ylabel="actual",
            xticks=range(10),
            yticks=range(10),
        )
    save_figure(figure, path)


def plot_layers(rows: list[dict], path: Path) -> None:
    """Per layer of the static int8 model: the FP32 ranges observed, and the scales chosen for them."""
    if not rows:
        return plot_not_applicable("Per-layer ranges and scales", path)
    names = [row["layer"] for row in rows]
    figure, (range_axis, scale_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for offset, (kind, color) in enumerate((("weight", "tab:blue"), ("activation", "tab:orange"))):
        for i, row in enumerate(rows):
            if f"{kind}_min" in row:
                range_axis.plot(
                    [i + offset * 0.2] * 2,
                    [row[f"{kind}_min"], row[f"{kind}_max"]],
                    color=color,
                    lw=6,
                    label=kind if i == 0 or (kind == "weight" and i == 1) else None,
                )
                scale_axis.bar(i + offset * 0.4, row[f"{kind}_scale"], width=0.4, color=color)
    range_axis.set(title="Observed FP32 range", xticks=range(len(names)), xticklabels=names)
    range_axis.legend()
    scale_axis.set(
        title="Scale (weight: blue, activation: orange)", xticks=range(len(names)), xticklabels=names, yscale="log"
    )
    for axis in (range_axis, scale_axis):
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    save_figure(figure, path)


def plot_weight_histograms(rows: list[dict], path: Path) -> None:
    """Each layer's FP32 weights against their dequantized int8 values, on the same bins."""
    if not rows:
        return plot_not_applicable("Weight histograms", path)
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    columns = min(len(layers), HISTOGRAM_COLUMNS)  # a grid, so that a network of 50 layers stays readable
    grid_rows = -(-len(layers) // columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(3.6 * columns, 3.2 * grid_rows), squeeze=False)
    for axis in axes.flat[len(layers) :]:
        axis.axis("off")
    for axis, layer in zip(axes.flat, layers):
        points = [row for row in rows if row["layer"] == layer]
        centers = [row["weight"] for row in points]
        axis.step(centers, [row["fp32"] for row in points], where="mid", label="fp32")
        axis.step(centers, [row["int8"] for row in points], where="mid", label="int8 (dequantized)", alpha=0.8)
        axis.set(title=layer, xlabel="weight value")
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=8)
    save_figure(figure, path)


def plot_sensitivity(rows: list[dict], path: Path) -> None:
    """Accuracy drop per layer, sorted: when only it is int8, and when all but it are."""
    names = [row["layer"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 0.5 * len(rows) + 1.8))
    positions = range(len(rows))
    axis.barh(
        [p - 0.2 for p in positions],
        [row["drop_only_this_int8"] for row in rows],
        height=0.4,
        label="only this layer int8",
    )
    axis.barh(
        [p + 0.2 for p in positions],
        [row["drop_all_but_this_int8"] for row in rows],
        height=0.4,
        label="all but this layer int8",
    )
    axis.set_yticks(list(positions), names)
    axis.invert_yaxis()
    axis.axvline(0, color="black", lw=0.8)
    axis.set(title="Accuracy drop per layer (test set)", xlabel="points lost against FP32")
    axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_op_types(rows: list[dict], path: Path) -> None:
    """The accuracy each op type wins back when kept in FP32 (sensitivity), the rest as the static variant."""
    names, won = [row["op_type"] for row in rows], [row["won_back"] for row in rows]
    plot_points(names, won, "Static int8 with one op type kept in FP32", "points won back (test set)", path)


def plot_steps(rows: list[dict], path: Path) -> None:
    """The accuracy each recovery step wins (sensitivity: the step left out, the rest of the recipe kept)."""
    names, won = [row["step"] for row in rows], [row["wins"] for row in rows]
    plot_points(names, won, "Static int8's recovery steps, each left out", "points the step wins (test set)", path)


def plot_points(names: list[str], values: list[float], title: str, xlabel: str, path: Path) -> None:
    """One horizontal bar of points per name, in the given order from the top."""
    figure, axis = plt.subplots(figsize=(6, 0.4 * len(names) + 1.6))
    axis.barh(names, values)
    axis.invert_yaxis()
    axis.axvline(0, color="black", lw=0.8)
    axis.set(title=title, xlabel=xlabel)
    save_figure(figure, path)


def plot_draws(rows: list[dict], fp32_accuracy: float, static_accuracy: float, path: Path) -> None:
    """Static int8's accuracy calibrated on each draw of the calibration images, beside FP32's and the variant's."""
    if not rows:
        plot_not_applicable("Static int8 over calibration draws (calibration.draws: 0)", path)
        return
    figure, axis = plt.subplots(figsize=(5.5, 3))
    axis.scatter([row["draw"] for row in rows], [row["accuracy"] * 100 for row in rows], label="static int8, a draw")
    axis.axhline(fp32_accuracy * 100, color="black", lw=0.8, label="FP32")
    axis.axhline(static_accuracy * 100, color="tab:green", lw=0.8, ls="--", label="the static variant")
    axis.set(title="Static int8 over calibration draws", xlabel="draw", ylabel="test accuracy (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    save_figure(figure, path)
