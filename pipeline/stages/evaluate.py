"""Stage `evaluate`: what each int8 variant gains and costs against FP32, each model loaded from its files alone.

    python -m pipeline evaluate

Per variant: top-1 and per-class accuracy, agreement with FP32 and logit SQNR; file sizes (the .pt state dict,
each file a user deploys: .ts or .pt2, .onnx, OpenVINO's .xml and .bin, and the floor of the weights themselves);
and latency in every form on every installed runtime (PyTorch eager, TorchScript, TorchScript optimized,
torch.compile; ONNX Runtime; OpenVINO), median and 90th percentile per batch size, with the best form reported.
Every form of every model is timed in the same rounds, so ratios compare the fastest FP32 a user could deploy
with the fastest int8, measured at the same moments. Each runtime's predictions are also checked against the
variant's own (`runtime_agreement`): for a PyTorch variant, how faithfully its ONNX export carries it. Writes the
headline figures to reports/metrics.json (what `dvc exp show` and `dvc metrics diff` list), every measurement to
reports/details.json (what the report reads), and the plot data under reports/plots/.
"""

from pathlib import Path

import torch
import typer

from pipeline.backends.interface import Calibration
from pipeline.backends.registry import backend_of
from pipeline.data.prepared import load_split
from pipeline.formats.variants import left_out_reason
from pipeline.measure.accuracy import logits
from pipeline.measure.latency import example_batch, time_models, unsaved_forms
from pipeline.measure.machine import cuda_latency, environment
from pipeline.measure.variants import (
    compare,
    fusion_effect,
    headline,
    latency_summary,
    load_variant,
    save_plots,
    summary_line,
)
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import DETAILS_FILE, INT8_MODELS, METRICS_FILE, PLOTS_DIR, PREPARED_DIR, VARIANTS
from pipeline.safe_io import save_jsons


def command(
    params_file: ParamsOption = PARAMS_FILE,
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    metrics_out: Path = typer.Option(METRICS_FILE, "--metrics", help="headline metrics JSON to write"),
    details_out: Path = typer.Option(DETAILS_FILE, "--details", help="every measurement, as JSON"),
    plots_dir: Path = typer.Option(PLOTS_DIR, "--plots", help="folder for the plot data"),
) -> None:
    """Measure accuracy, size and latency of the FP32 model and every int8 variant."""
    params = load_params(params_file)
    settings = params.evaluate
    images, labels = load_split(data_dir, "test")
    calibration = Calibration(load_split(data_dir, "calib")[0], params.calibration.batches)
    torch.set_num_threads(settings.threads)
    probe = example_batch(images, settings.batch_sizes[0])
    left_out = {name: reason for name, path in VARIANTS.items() if (reason := left_out_reason(path))}
    made = {name: path for name, path in VARIANTS.items() if name not in left_out}
    loaded = {name: load_variant(path, settings.threads, probe) for name, path in made.items()}  # checked first
    outputs = {name: logits(variant.scored, images) for name, variant in loaded.items()}
    forms = {name: variant.forms for name, variant in loaded.items()}
    static = loaded["static"].recipe
    backend = backend_of(static)
    counterpart = backend.fusion_counterpart(loaded["fp32"].model, static, calibration)
    if counterpart is not None:
        forms["fusion_counterpart"] = unsaved_forms(counterpart, "int8", images[:1])
    latencies = {name: latency_summary(timings) for name, timings in time_models(forms, images, settings).items()}
    results = compare(loaded, outputs, latencies, labels, images, settings.resamples, params.seed)
    for name, result in results.items():
        typer.echo(summary_line(name, result))
    results["static"]["fusion"] = (
        fusion_effect(static.fused, results["static"]["latency_ms"], latencies["fusion_counterpart"]["latency_ms"])
        if counterpart is not None
        else f"not measured: the {backend.name} backend fuses layers itself, always"
    )
    int8_made = [name for name in INT8_MODELS if name in results]  # in order: the first of equal accuracies wins
    best_int8 = max(int8_made, key=lambda name: results[name]["accuracy"])
    extra = {
        "best_int8": best_int8,
        "fp32_cuda": cuda_latency(loaded["fp32"].model, images, settings),
        "forms_left_out": {name: v.left_out for name, v in loaded.items() if v.left_out},
        "variants_left_out": left_out,
        "environment": environment(settings.threads, backend),
    }
    save_jsons({metrics_out: headline(results, best_int8), details_out: {**results, **extra}})
    save_plots(results, plots_dir, labels, {"fp32": outputs["fp32"], "best_int8": outputs[best_int8]})
