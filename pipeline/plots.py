"""Figures from the plot data, drawn with matplotlib and written atomically as PNG."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.artifacts import atomic_path  # noqa: E402


def save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def plot_training(history: list[dict], path: Path) -> None:
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [row["epoch"] for row in history]
    loss_axis.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_axis.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
    for key in ("train_accuracy", "test_accuracy"):
        accuracy_axis.plot(epochs, [row[key] for row in history], marker="o", label=key.replace("_", " "))
    accuracy_axis.set(title="Accuracy", xlabel="epoch", ylabel="top-1")
    accuracy_axis.legend()
    save_figure(figure, path)


def plot_accuracy_vs_size(variants: list[dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for row, marker in zip(variants, "os^Dv*"):  # distinct markers: int8 variants often sit on top of each other
        axis.scatter(row["size_kb"], row["accuracy"] * 100, s=70, marker=marker, alpha=0.8, label=row["variant"])
    axis.legend()
    axis.set(title="Accuracy vs model size", xlabel="file size (KB)", ylabel="test accuracy (%)")
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def plot_latency(latency: list[dict], path: Path) -> None:
    batch_sizes = sorted({row["batch_size"] for row in latency})
    variants = list(dict.fromkeys(row["variant"] for row in latency))
    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(4.5 * len(batch_sizes), 3.5), squeeze=False)
    for axis, batch_size in zip(axes[0], batch_sizes):
        times = {row["variant"]: row["latency_ms"] for row in latency if row["batch_size"] == batch_size}
        axis.barh(variants, [times[name] for name in variants])
        axis.invert_yaxis()
        axis.set(title=f"Latency at batch {batch_size}", xlabel="median ms per batch")
    save_figure(figure, path)
