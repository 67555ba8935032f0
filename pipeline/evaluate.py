"""Stage `evaluate`: accuracy, file size and latency of every variant, each loaded from its file alone.

    python -m pipeline evaluate

Writes reports/metrics.json (one entry per variant; int8 entries add ratios against fp32) and the plot data
under reports/plots/. Latency is the median of `evaluate.repeats` timed calls after `evaluate.warmup` untimed
ones, under torch.inference_mode, with `evaluate.threads` threads.
"""

import platform
import statistics
import time
from pathlib import Path

import torch
import typer
from torch import nn

from pipeline.artifacts import save_json
from pipeline.checkpoints import FP32_MODEL, INT8_MODELS, load_model
from pipeline.models import accuracy
from pipeline.params import PARAMS_FILE, EvaluateParams, load_params
from pipeline.prepare import PREPARED_DIR, load_split

VARIANTS = {"fp32": FP32_MODEL, **INT8_MODELS}
METRICS_FILE = Path("reports/metrics.json")
PLOTS_DIR = Path("reports/plots")


def example_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`batch_size` test images, cycling through the set if it is smaller."""
    copies = -(-batch_size // len(images))
    return images.repeat(copies, 1, 1, 1)[:batch_size]


@torch.inference_mode()
def median_latency_ms(model: nn.Module, batch: torch.Tensor, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 4)


def measure(model: nn.Module, path: Path, images: torch.Tensor, labels: torch.Tensor, settings: EvaluateParams) -> dict:
    latency = {
        f"batch_{size}": median_latency_ms(model, example_batch(images, size), settings.warmup, settings.repeats)
        for size in settings.batch_sizes
    }
    return {"accuracy": accuracy(model, images, labels), "size_bytes": path.stat().st_size, "latency_ms": latency}


def against(baseline: dict, variant: dict) -> dict:
    """Ratios of a variant to the baseline: accuracy change (fraction), size ratio, speed-up per batch size."""
    return {
        "accuracy_change": round(variant["accuracy"] - baseline["accuracy"], 4),
        "size_ratio": round(variant["size_bytes"] / baseline["size_bytes"], 4),
        "speedup": {key: round(baseline["latency_ms"][key] / value, 4) for key, value in variant["latency_ms"].items()},
    }


def environment(threads: int) -> dict:
    return {
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": platform.machine(),
        "threads": threads,
    }


def plot_data(results: dict) -> tuple[list[dict], list[dict]]:
    """Rows for DVC plots: one per variant (accuracy vs size), one per variant and batch size (latency)."""
    variants = [{"variant": name, "accuracy": r["accuracy"], "size_kb": r["size_bytes"] / 1000} for name, r in results.items()]
    latency = [
        {"variant": name, "batch_size": int(key.removeprefix("batch_")), "latency_ms": value}
        for name, r in results.items()
        for key, value in r["latency_ms"].items()
    ]
    return variants, latency


def command(
    params_file: Path = typer.Option(PARAMS_FILE, "--params", help="params.yaml to read"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding test.pt"),
    metrics_out: Path = typer.Option(METRICS_FILE, "--metrics", help="metrics JSON to write"),
    plots_dir: Path = typer.Option(PLOTS_DIR, "--plots", help="folder for the plot data"),
) -> None:
    """Measure accuracy, size and latency of the FP32 model and every int8 variant."""
    settings = load_params(params_file).evaluate
    images, labels = load_split(data_dir / "test.pt")
    models = {name: load_model(path) for name, path in VARIANTS.items()}  # every file is checked before timing
    torch.set_num_threads(settings.threads)
    results = {}
    for name, model in models.items():
        results[name] = measure(model, VARIANTS[name], images, labels, settings)
        typer.echo(f"{name:8} accuracy {results[name]['accuracy']:.4f}  size {results[name]['size_bytes']:,} B  "
                   + "  ".join(f"{key} {ms:.3f} ms" for key, ms in results[name]["latency_ms"].items()))
    for name in INT8_MODELS:
        results[name]["vs_fp32"] = against(results["fp32"], results[name])
    variants, latency = plot_data(results)
    save_json({**results, "environment": environment(settings.threads)}, metrics_out)
    save_json(variants, plots_dir / "variants.json")
    save_json(latency, plots_dir / "latency.json")
