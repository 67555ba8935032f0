"""Stage `report`: PNG figures and reports/summary.md from evaluation's details and the plot data.

python -m pipeline report
"""

from pathlib import Path

import typer

from pipeline.measure.summary import draws_line, kernels_line, op_types_line, steps_ranking_line, summary_markdown
from pipeline.paths import (
    CHANGES_PLOT,
    CONFUSION_PLOTS,
    DETAILS_FILE,
    DRAWS_FILE,
    DRAWS_PLOT,
    LATENCY_PLOT,
    LAYERS_PLOT,
    OP_TYPES_PLOT,
    PLOTS_DIR,
    SENSITIVITY_PLOT,
    STEPS_PLOT,
    TRAINING_PLOT,
    VARIANTS_PLOT,
    WEIGHTS_PLOT,
)
from pipeline.safe_io import load_json, save_text

FIGURES_DIR = Path("reports/figures")
SUMMARY_FILE = Path("reports/summary.md")


def command(
    details_file: Path = typer.Option(DETAILS_FILE, "--details", help="every measurement, written by evaluate"),
    plots_dir: Path = typer.Option(PLOTS_DIR, "--plots", help="folder holding the plot data"),
    figures_dir: Path = typer.Option(FIGURES_DIR, "--figures", help="folder for the PNG figures"),
    summary_out: Path = typer.Option(SUMMARY_FILE, "--summary", help="Markdown summary to write"),
    draws_file: Path = typer.Option(DRAWS_FILE, "--draws", help="static int8's spread over calibration draws"),
) -> None:
    """Draw the figures and write the summary table."""
    from pipeline import plots  # matplotlib: only this stage pays for the import

    metrics = load_json(details_file)

    def data(name: str):
        return load_json(plots_dir / name)

    plots.plot_training(data(TRAINING_PLOT), figures_dir / "training.png")
    plots.plot_accuracy_vs_size(data(VARIANTS_PLOT), data(CHANGES_PLOT), figures_dir / "accuracy_vs_size.png")
    plots.plot_latency(data(LATENCY_PLOT), figures_dir / "latency.png")
    confusions = {name: data(file) for name, file in CONFUSION_PLOTS.items()}
    plots.plot_confusions(confusions, f"best int8 ({metrics['best_int8']})", figures_dir / "confusion.png")
    plots.plot_layers(data(LAYERS_PLOT), figures_dir / "layers.png")
    plots.plot_weight_histograms(data(WEIGHTS_PLOT), figures_dir / "weights.png")
    plots.plot_sensitivity(data(SENSITIVITY_PLOT), figures_dir / "sensitivity.png")
    op_types = data(OP_TYPES_PLOT)
    if op_types:  # a runtime backend's static int8 (sensitivity)
        plots.plot_op_types(op_types, figures_dir / "op_types.png")
    draws = load_json(draws_file)["static"]
    static_accuracy = metrics["static"]["accuracy"]
    plots.plot_draws(data(DRAWS_PLOT), draws["fp32_accuracy"], static_accuracy, figures_dir / "draws.png")
    steps = data(STEPS_PLOT)
    if steps:  # a static variant that took recovery steps (sensitivity)
        plots.plot_steps(steps, figures_dir / "steps.png")
    lines = draws_line(draws) + op_types_line(op_types) + steps_ranking_line(steps)
    summary = summary_markdown(metrics) + lines + kernels_line(metrics)
    save_text(summary, summary_out)
    typer.echo(summary)
