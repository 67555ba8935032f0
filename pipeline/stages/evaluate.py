"""Stage `evaluate`: what each int8 variant gains and costs against FP32, each model loaded from its files alone.

    python -m pipeline evaluate

Per variant: top-1 and per-class accuracy, agreement with FP32 and logit SQNR; file sizes (the .pt state dict,
the .ts file a user deploys, and the floor of the weights themselves); and latency in every form (eager,
TorchScript, TorchScript optimized), median and 90th percentile per batch size, with the best form reported.
Every form of every model is timed in the same rounds, so ratios compare best FP32 with best int8 measured
at the same moments. Writes reports/metrics.json and the plot data under reports/plots/.
"""

import platform
from importlib.metadata import version
from pathlib import Path

import torch
import typer
from torch import nn

from pipeline.artifacts import save_json
from pipeline.checkpoints import deployable_path, floor_bytes, model_file, read_model
from pipeline.data import load_split
from pipeline.fidelity import logits, score
from pipeline.latency import (
    best_of,
    compiled,
    compiled_forms,
    cpu_flags,
    cpu_info,
    cpu_model,
    example_batch,
    time_calls,
    time_models,
    unsaved_forms,
)
from pipeline.params import PARAMS_FILE, EvaluateParams, ParamsOption, load_params
from pipeline.paths import INT8_MODELS, METRICS_FILE, PLOTS_DIR, PREPARED_DIR, VARIANTS
from pipeline.quantize import quantize_static, static_qconfig, use_engine
from pipeline.torchscript import load_deployable


def latency_summary(forms: dict) -> dict:
    """A model's timings in every form, {form: {"batch_N": timing}}, and its best form per batch size."""
    best = best_of(forms)
    return {
        "latency_ms": {key: entry["median_ms"] for key, entry in best.items()},
        "latency_p90_ms": {key: entry["p90_ms"] for key, entry in best.items()},
        "images_per_s": {
            key: round(int(key.removeprefix("batch_")) / entry["median_ms"] * 1e3) for key, entry in best.items()
        },
        "best_form": {key: entry["form"] for key, entry in best.items()},
        "forms": forms,
    }


def measure_size(model: nn.Module, path: Path) -> dict:
    floor, deployed = floor_bytes(model.state_dict()), deployable_path(path).stat().st_size
    return {
        "size_bytes": model_file(path).stat().st_size,
        "deploy_size_bytes": deployed,
        "floor_bytes": floor,
        "deploy_floor_ratio": round(deployed / floor, 4),
    }


def fusion_counterpart(fp32: nn.Module, recipe: dict, calibration: torch.Tensor, batches: int) -> nn.Module:
    """The static recipe converted with fusion the other way: unfused if the static variant is fused."""
    use_engine(recipe["engine"])
    qconfig = static_qconfig(
        recipe["observer"], recipe["per_channel"], recipe["engine"], recipe["symmetric_activations"]
    )
    return quantize_static(fp32, qconfig, calibration, batches, not recipe["fused"], recipe["skip_layers"])


def fusion_effect(fused_first: bool, static_latency: dict, counterpart_latency: dict) -> dict:
    """What layer fusion buys: the static variant's best-form latency beside its counterpart's."""
    fused, unfused = (static_latency, counterpart_latency) if fused_first else (counterpart_latency, static_latency)
    return {
        "fused_ms": fused,
        "unfused_ms": unfused,
        "unfused_vs_fused": {key: round(unfused[key] / ms, 4) for key, ms in fused.items()},
    }


def against(baseline: dict, variant: dict) -> dict:
    """A variant against FP32: accuracy change (fraction), size ratios, and best-form speed-up per batch size."""
    return {
        "accuracy_change": round(variant["accuracy"] - baseline["accuracy"], 4),
        "size_ratio": round(variant["size_bytes"] / baseline["size_bytes"], 4),
        "deploy_size_ratio": round(variant["deploy_size_bytes"] / baseline["deploy_size_bytes"], 4),
        "speedup": {key: round(baseline["latency_ms"][key] / value, 4) for key, value in variant["latency_ms"].items()},
        "compared": {
            key: f"int8 {form} vs fp32 {baseline['best_form'][key]}" for key, form in variant["best_form"].items()
        },
    }


def environment(threads: int, backend: str) -> dict:
    cpu = cpu_info()
    return {
        "backend": backend,
        "torch": torch.__version__,
        "torchao": version("torchao") if backend == "pt2e" else "not used",
        "quantized_engine": torch.backends.quantized.engine if backend == "eager" else "none (Inductor's oneDNN)",
        "cpu_model": cpu_model(cpu),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": " ".join(cpu_flags(cpu)),
        "processor": platform.machine(),
        "threads": threads,
    }


def cuda_latency(model: nn.Module, images: torch.Tensor, settings: EvaluateParams) -> dict | str:
    """FP32 eager latency on the GPU where there is one; otherwise the reason it was not measured."""
    if not torch.cuda.is_available():
        return "not measured: no CUDA device (torch.cuda.is_available() is False)"
    model = model.to("cuda")
    timings = {}
    for size in settings.batch_sizes:
        batch = example_batch(images, size).to("cuda")
        timings[f"batch_{size}"] = time_calls(
            lambda x: (model(x), torch.cuda.synchronize()),
            batch,
            settings.warmup,
            settings.repeats,
            settings.max_seconds,
        )
    return {"latency_ms": {key: t["median_ms"] for key, t in timings.items()}, "device": torch.cuda.get_device_name()}


def plot_data(results: dict) -> tuple[list[dict], list[dict]]:
    """Rows for DVC plots: one per variant (accuracy vs size), one per variant, form and batch size (latency)."""
    variants = [
        {
            "variant": name,
            "accuracy": r["accuracy"],
            "size_kb": r["size_bytes"] / 1000,
            "deploy_size_kb": r["deploy_size_bytes"] / 1000,
        }
        for name, r in results.items()
    ]
    latency = [
        {"variant": name, "form": form, "batch_size": int(key.removeprefix("batch_")), "latency_ms": t["median_ms"]}
        for name, r in results.items()
        for form, batches in r["forms"].items()
        for key, t in batches.items()
    ]
    return variants, latency


def command(
    params_file: ParamsOption = PARAMS_FILE,
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding test.pt and calib.pt"),
    metrics_out: Path = typer.Option(METRICS_FILE, "--metrics", help="metrics JSON to write"),
    plots_dir: Path = typer.Option(PLOTS_DIR, "--plots", help="folder for the plot data"),
) -> None:
    """Measure accuracy, size and latency of the FP32 model and every int8 variant."""
    params = load_params(params_file)
    settings = params.evaluate
    images, labels = load_split(data_dir / "test.pt")
    calibration, _ = load_split(data_dir / "calib.pt")
    loaded = {name: read_model(path) for name, path in VARIANTS.items()}  # every file is checked before timing
    models = {name: model for name, (model, _) in loaded.items()}
    kinds = {name: info["kind"] for name, (_, info) in loaded.items()}
    recipes = {name: loaded[name][1]["recipe"] for name in INT8_MODELS}
    for path in VARIANTS.values():
        if deployable_path(path).suffix == ".ts":
            load_deployable(deployable_path(path))
    torch.set_num_threads(settings.threads)
    # A pt2e graph is scored as it runs when deployed, compiled to int8 kernels; uncompiled, it computes in FP32.
    outputs = {
        name: logits(compiled(model) if model_file(VARIANTS[name]).suffix == ".pt2" else model, images)
        for name, model in models.items()
    }
    forms = {
        name: compiled_forms(model, deployable_path(VARIANTS[name]), kinds[name]) for name, model in models.items()
    }
    fusion_measured = recipes["static"].get("backend") != "pt2e"  # torch.compile always fuses
    if fusion_measured:
        counterpart = fusion_counterpart(models["fp32"], recipes["static"], calibration, params.calibration.batches)
        forms["fusion_counterpart"] = unsaved_forms(counterpart, "int8", images[:1])
    latencies = {name: latency_summary(timings) for name, timings in time_models(forms, images, settings).items()}
    results = {}
    for name, model in models.items():
        reference = None if name == "fp32" else outputs["fp32"]
        results[name] = {
            **score(outputs[name], labels, reference),
            **measure_size(model, VARIANTS[name]),
            **latencies[name],
        }
        typer.echo(
            f"{name:8} accuracy {results[name]['accuracy']:.4f}  deploy {results[name]['deploy_size_bytes']:,} B  "
            + "  ".join(
                f"{key} {ms:.3f} ms ({results[name]['best_form'][key]})"
                for key, ms in results[name]["latency_ms"].items()
            )
        )
    for name in INT8_MODELS:
        results[name]["vs_fp32"] = against(results["fp32"], results[name])
        if "skip_layers" in recipes[name]:
            kept = recipes[name]["skip_layers"]
            results[name]["float_layers"] = {"count": len(kept), "names": " ".join(kept) or "none"}
    results["static"]["fusion"] = (
        fusion_effect(
            recipes["static"]["fused"], results["static"]["latency_ms"], latencies["fusion_counterpart"]["latency_ms"]
        )
        if fusion_measured
        else "not measured: the pt2e backend leaves fusion to torch.compile, which always fuses"
    )
    best_int8 = max(INT8_MODELS, key=lambda name: results[name]["accuracy"])
    variants, latency = plot_data(results)
    save_json(
        {
            **results,
            "best_int8": best_int8,
            "fp32_cuda": cuda_latency(models["fp32"], images, settings),
            "environment": environment(settings.threads, recipes["static"].get("backend", "eager")),
        },
        metrics_out,
    )
    save_json(variants, plots_dir / "variants.json")
    save_json(latency, plots_dir / "latency.json")
    for name, file in (("fp32", "confusion_fp32.json"), (best_int8, "confusion_best_int8.json")):
        # One row per test image, the form DVC's confusion template counts.
        rows = [{"actual": a, "predicted": p} for a, p in zip(labels.tolist(), outputs[name].argmax(1).tolist())]
        save_json(rows, plots_dir / file)
