"""`python -m pipeline bench`: int8 against FP32 speed, per architecture, backend and runtime, in one run.

    python -m pipeline bench --arch mlp --arch cnn --markdown reports/bench.md
    python -m pipeline bench --arch resnet50 --arch vit_b_16 --image-size 224 --channels 3 --classes 1000

The tables are `pipeline.measure.bench`'s: every backend's dynamic and static int8 of each architecture, built fresh
with random weights, timed in every form on every installed runtime against the fastest FP32. Not a DVC stage: its
figures belong to the machine and the moment, and are printed, not cached.
"""

from datetime import date
from pathlib import Path

import torch
import typer

from pipeline.backends.registry import BACKENDS
from pipeline.measure.bench import ENGINES, bench_data, bench_tables
from pipeline.measure.machine import machine, machine_line
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.safe_io import save_text


def command(
    params_file: ParamsOption = PARAMS_FILE,
    engines: list[str] = typer.Option(list(ENGINES), "--engine", help="quantized engines of the eager backend"),
    backends: list[str] = typer.Option(list(BACKENDS), "--backend", help="backends to compare (quantize.backend)"),
    archs: list[str] = typer.Option(
        ["mlp", "cnn"], "--arch", help="train.arch values to compare: mlp, cnn, resnet18, ..."
    ),
    repeats: int = typer.Option(
        100, min=3, help="timed calls per form and batch size (evaluate.max_seconds caps them)"
    ),
    image_size: int = typer.Option(28, min=8, max=1024, help="side of the square images the models take"),
    channels: int = typer.Option(1, min=1, max=3, help="channels of those images: 1 (grey) or 3 (RGB)"),
    classes: int = typer.Option(10, min=2, max=100_000, help="classes the models tell apart"),
    markdown: Path | None = typer.Option(None, "--markdown", help="also write the tables to this Markdown file"),
) -> None:
    """Print the fastest FP32 against the fastest int8 per architecture, backend and runtime."""
    params = load_params(params_file)
    timing = params.evaluate.model_copy(update={"repeats": repeats})
    for asked, known in ((engines, torch.backends.quantized.supported_engines), (backends, list(BACKENDS))):
        if set(asked) - set(known):
            raise typer.BadParameter(f"{sorted(set(asked) - set(known))} not supported here; choose from {known}")
    torch.set_num_threads(params.evaluate.threads)
    data = bench_data(channels, image_size, classes)
    measured_on = machine_line(machine(params.evaluate.threads))
    typer.echo(measured_on)
    shape = f"models of {channels}x{image_size}x{image_size} images and {classes} classes"
    typer.echo(shape)
    typer.echo("median ms and fastest form per batch; fp32: the fastest on any runtime\n")
    fp32_lines, lines = bench_tables(params, archs, engines, backends, timing, data)
    tables = "\n".join(fp32_lines) + "\n\n" + "\n".join(lines)
    typer.echo("\n" + tables)
    if markdown is not None:
        title = (
            f"# `make bench`, {date.today()}\n\nMeasured on {measured_on}, {shape}: median ms and the fastest form "
            "per batch."
        )
        int8 = "Each backend's int8 on each runtime, against the fastest FP32 on any runtime (x: times faster):"
        fp32, table = "\n".join(fp32_lines), "\n".join(lines)
        save_text(f"{title}\n\nFP32 on each runtime:\n\n{fp32}\n\n{int8}\n\n{table}\n", markdown)
