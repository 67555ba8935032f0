"""Stage `evaluate`: what each int8 variant gains and costs against FP32, each model loaded from its files alone.

    python -m pipeline evaluate

Per variant: top-1 and per-class accuracy, agreement with FP32 and logit SQNR; file sizes (the .pt state dict,
each file a user deploys: .ts or .pt2, .onnx, OpenVINO's .xml and .bin, and the floor of the weights themselves);
and latency in every form on every installed runtime (PyTorch eager, TorchScript, TorchScript optimized,
torch.compile; ONNX Runtime; OpenVINO), median and 90th percentile per batch size, with the best form reported.
Every form of every model is timed in the same rounds, so ratios compare the fastest FP32 a user could deploy
with the fastest int8, measured at the same moments. Each runtime's predictions are also checked against the
variant's own (`runtime_agreement`): for a PyTorch variant, how faithfully its ONNX export carries it. Writes
reports/metrics.json and the plot data under reports/plots/.
"""

import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
import typer
from torch import nn

from pipeline.artifacts import save_json
from pipeline.checkpoints import deployable_path, floor_bytes, holds_pytorch_model, model_file, read_model
from pipeline.data import load_split
from pipeline.errors import PipelineError
from pipeline.exchange import onnx_floor_bytes, openvino_floor_bytes
from pipeline.fidelity import agreement, logits, score
from pipeline.latency import (
    best_of,
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
from pipeline.runtimes import ONNX_FILE, OPENVINO_FILE, RUNTIMES, missing, read_settings, runtime_forms
from pipeline.torchscript import load_deployable


@dataclass
class Variant:
    """A model as evaluation runs it: its PyTorch module where it has one, what its files say it is, every form
    it can be timed in, the runnable its accuracy is scored with, and the runtimes left out (not installed)."""

    model: nn.Module | None
    settings: dict
    forms: dict
    scored: Callable
    left_out: dict[str, str]


def load_variant(folder: Path, threads: int) -> Variant:
    """Load every file of a model's folder, so a damaged one stops evaluation before any timing."""
    runtimes, left_out = runtime_forms(folder, threads)
    if not holds_pytorch_model(folder):
        if not runtimes:  # only a runtime's file, and that runtime missing: nothing can run it
            raise PipelineError(next(iter(left_out.values()), f"{folder}: holds no model file (run `dvc repro`)"))
        settings = read_settings(folder)
        return Variant(None, settings, runtimes, next(iter(runtimes.values())), left_out)
    model, settings = read_model(folder)
    deployable = deployable_path(folder)
    if deployable.suffix == ".ts":
        load_deployable(deployable)
    pytorch = compiled_forms(model, deployable, settings["kind"])
    # A pt2e graph is scored as it runs when deployed, compiled to int8 kernels; uncompiled, it computes in FP32.
    scored = pytorch["compiled"] if deployable.suffix == ".pt2" else model
    return Variant(model, settings, {**pytorch, **runtimes}, scored, left_out)


def runtime_agreement(variant: Variant, reference: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """Share of test images on which each runtime predicts what the variant's scored form predicts: for a
    PyTorch model, how faithfully its ONNX file carries it to ONNX Runtime and OpenVINO."""
    return {
        runtime: round(agreement(logits(run, images).argmax(1), reference.argmax(1)), 4)
        for runtime, run in variant.forms.items()
        if runtime in RUNTIMES and run is not variant.scored
    }


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


def measure_size(model: nn.Module | None, folder: Path) -> dict:
    """The model file's bytes, the deployable file's, and every deployed file against the least it could hold."""
    files = deployed_files(model, folder)
    deployable = deployable_path(folder)
    main = files[FORMAT_OF[deployable.suffix]]
    return {
        "size_bytes": (model_file(folder) if model is not None else deployable).stat().st_size,
        "deploy_size_bytes": main["bytes"],
        "floor_bytes": main["floor_bytes"],
        "deploy_floor_ratio": main["floor_ratio"],
        "files": files,
    }


FORMAT_OF = {".ts": "torchscript", ".pt2": "torch.export", ".onnx": "onnx", ".xml": "openvino"}


def deployed_files(model: nn.Module | None, folder: Path) -> dict:
    """{format: bytes, floor_bytes, floor_ratio} for each deployable file in `folder`; OpenVINO's counts .xml+.bin."""
    found = {}
    if model is not None:
        found[FORMAT_OF[deployable_path(folder).suffix]] = (
            deployable_path(folder).stat().st_size,
            floor_bytes(model.state_dict()),
        )
    if (folder / ONNX_FILE).is_file():
        found["onnx"] = ((folder / ONNX_FILE).stat().st_size, onnx_floor_bytes(folder / ONNX_FILE))
    if (folder / OPENVINO_FILE).is_file():
        xml = folder / OPENVINO_FILE
        found["openvino"] = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size, openvino_floor_bytes(xml))
    return {
        name: {"bytes": size, "floor_bytes": floor, "floor_ratio": round(size / floor, 4)}
        for name, (size, floor) in found.items()
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


def runtime_label(form: str) -> str:
    return form if form in RUNTIMES else f"pytorch {form}"


def against(baseline: dict, variant: dict) -> dict:
    """A variant against FP32: accuracy change (fraction), size ratios, and best-form speed-up per batch size."""
    return {
        "accuracy_change": round(variant["accuracy"] - baseline["accuracy"], 4),
        "size_ratio": round(variant["size_bytes"] / baseline["size_bytes"], 4),
        "deploy_size_ratio": round(variant["deploy_size_bytes"] / baseline["deploy_size_bytes"], 4),
        "speedup": {key: round(baseline["latency_ms"][key] / value, 4) for key, value in variant["latency_ms"].items()},
        "compared": {
            key: f"int8 {runtime_label(form)} vs fp32 {runtime_label(baseline['best_form'][key])}"
            for key, form in variant["best_form"].items()
        },
    }


def environment(threads: int, backend: str) -> dict:
    cpu = cpu_info()
    engines = {"eager": torch.backends.quantized.engine, "pt2e": "none (Inductor's oneDNN)"}
    return {
        "backend": backend,
        "torch": torch.__version__,
        "torchao": version("torchao") if backend == "pt2e" else "not used",
        **{runtime: "not installed" if missing(runtime) else version(runtime) for runtime in RUNTIMES},
        "nncf": version("nncf") if backend == "openvino" else "not used",
        "quantized_engine": engines.get(backend, "none (the runtime's own kernels)"),
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
    torch.set_num_threads(settings.threads)
    loaded = {name: load_variant(path, settings.threads) for name, path in VARIANTS.items()}  # all checked first
    models = {name: variant.model for name, variant in loaded.items()}
    recipes = {name: loaded[name].settings["recipe"] for name in INT8_MODELS}
    outputs = {name: logits(variant.scored, images) for name, variant in loaded.items()}
    forms = {name: variant.forms for name, variant in loaded.items()}
    fusion_measured = recipes["static"].get("backend", "eager") == "eager"  # torch.compile always fuses
    if fusion_measured:
        counterpart = fusion_counterpart(models["fp32"], recipes["static"], calibration, params.calibration.batches)
        forms["fusion_counterpart"] = unsaved_forms(counterpart, "int8", images[:1])
    latencies = {name: latency_summary(timings) for name, timings in time_models(forms, images, settings).items()}
    results = {}
    for name, model in models.items():
        reference = None if name == "fp32" else outputs["fp32"]
        results[name] = {
            **score(outputs[name], labels, reference),
            "runtime_agreement": runtime_agreement(loaded[name], outputs[name], images),
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
        else f"not measured: the {recipes['static']['backend']} backend fuses layers itself, always"
    )
    best_int8 = max(INT8_MODELS, key=lambda name: results[name]["accuracy"])
    variants, latency = plot_data(results)
    save_json(
        {
            **results,
            "best_int8": best_int8,
            "fp32_cuda": cuda_latency(models["fp32"], images, settings),
            "runtimes_left_out": {name: v.left_out for name, v in loaded.items() if v.left_out},
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
