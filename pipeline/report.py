"""Stage `report`: PNG figures and reports/summary.md from the metrics and plot data.

    python -m pipeline report
"""

from pathlib import Path

import typer

from pipeline.artifacts import load_json, save_text
from pipeline.evaluate import METRICS_FILE, PLOTS_DIR
from pipeline.train import TRAINING_HISTORY

FIGURES_DIR = Path("reports/figures")
SUMMARY_FILE = Path("reports/summary.md")


def summary_markdown(metrics: dict) -> str:
    """One table row per variant: accuracy, size and latency, each with its change against fp32."""
    environment = metrics["environment"]
    variants = {name: entry for name, entry in metrics.items() if name != "environment"}
    batch_keys = list(variants["fp32"]["latency_ms"])
    header = ["variant", "accuracy", "vs fp32 (pp)", "size (KB)", "x smaller"]
    for key in batch_keys:
        header += [f"{key.replace('_', ' ')} (ms)", "x faster"]
    rows = []
    for name, entry in variants.items():
        ratios = entry.get("vs_fp32")
        row = [name, f"{entry['accuracy']:.4f}", f"{ratios['accuracy_change'] * 100:+.2f}" if ratios else "",
               f"{entry['size_bytes'] / 1000:.1f}", f"{1 / ratios['size_ratio']:.2f}" if ratios else ""]
        for key in batch_keys:
            row += [f"{entry['latency_ms'][key]:.3f}", f"{ratios['speedup'][key]:.2f}" if ratios else ""]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    machine = (f"Measured with torch {environment['torch']}, quantized engine {environment['quantized_engine']}, "
               f"CPU capability {environment['cpu_capability']} ({environment['processor']}), "
               f"{environment['threads']} thread(s); eager-mode models.")
    return "# Quantization summary\n\n" + "\n".join(lines) + "\n\n" + machine + "\n"


def command(
    metrics_file: Path = typer.Option(METRICS_FILE, "--metrics", help="metrics JSON written by evaluate"),
    plots_dir: Path = typer.Option(PLOTS_DIR, "--plots", help="folder holding the plot data"),
    history_file: Path = typer.Option(TRAINING_HISTORY, "--history", help="training history JSON"),
    figures_dir: Path = typer.Option(FIGURES_DIR, "--figures", help="folder for the PNG figures"),
    summary_out: Path = typer.Option(SUMMARY_FILE, "--summary", help="Markdown summary to write"),
) -> None:
    """Draw the figures and write the summary table."""
    from pipeline.plots import plot_accuracy_vs_size, plot_latency, plot_training  # matplotlib: only this stage pays

    metrics = load_json(metrics_file)
    plot_training(load_json(history_file), figures_dir / "training.png")
    plot_accuracy_vs_size(load_json(plots_dir / "variants.json"), figures_dir / "accuracy_vs_size.png")
    plot_latency(load_json(plots_dir / "latency.json"), figures_dir / "latency.png")
    save_text(summary_markdown(metrics), summary_out)
    typer.echo(summary_markdown(metrics))
