"""Each model as evaluation loads, scores and compares it: every form it runs in, and how it stands against FP32."""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.backends.eager.modules import use_engine
from pipeline.backends.interface import Backend, Calibration
from pipeline.backends.loading import load_module
from pipeline.backends.recipes import Recipe, StaticRecipe
from pipeline.backends.registry import recipe_from
from pipeline.backends.steps import steps_applied
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.deployables import deployable_path, read_runtime_settings
from pipeline.formats.files import (
    ONNX_FILE,
    holds_pytorch_model,
    is_exported,
    is_torchscript,
)
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.onnx import holds_qdq_only
from pipeline.formats.torchscript import load_deployable
from pipeline.measure.accuracy import agreement, change_interval, logits, score
from pipeline.measure.latency import best_of, compiled, compiled_forms
from pipeline.measure.sizes import measure_size
from pipeline.optional import missing
from pipeline.paths import CHANGES_PLOT, CONFUSION_PLOTS, LATENCY_PLOT, VARIANTS_PLOT
from pipeline.runtimes import RUNTIMES, onnxruntime_runnable, runtime_files, runtime_forms, runtime_of
from pipeline.safe_io import save_json


@dataclass
class Variant:
    """A model as evaluation runs it: its PyTorch module where it has one, what its files say it is (and for int8
    the recipe that made it), every form that runs it, the runnable its accuracy is scored with, and the forms
    left out, each with the reason (a runtime not installed, a file a runtime cannot load, a form that fails)."""

    folder: Path
    model: nn.Module | None
    settings: dict
    recipe: Recipe | None
    forms: dict
    scored: Callable
    left_out: dict[str, str]


def load_variant(folder: Path, threads: int, probe: torch.Tensor) -> Variant:
    """Load every file of a model's folder (a damaged PyTorch file stops evaluation before any timing) and run
    each form once on `probe`, and each runtime's also on one and two of its images: a form that fails is left
    out, with why; the model is refused only when no form of it runs."""
    forms, left_out = runtime_forms(folder, threads)
    model, settings, preferred = None, None, None
    if holds_pytorch_model(folder):
        model, settings = load_module(folder)
        deployable = deployable_path(folder)
        if is_torchscript(deployable):
            load_deployable(deployable)
        pytorch = compiled_forms(model, deployable, settings["kind"])
        # A pt2e graph is scored as it runs when deployed, compiled to int8 kernels; uncompiled, it computes in FP32.
        preferred = "compiled" if is_exported(deployable) else "eager"
        forms = {**pytorch, **forms}
    elif forms:
        settings = read_runtime_settings(folder)
    for form, run in list(forms.items()):
        failure = failing(run, [probe, probe[:1], probe[:2]] if form in RUNTIMES else [probe])
        if failure is not None:
            left_out[form] = f"not measured: {failure}"
            del forms[form]
    if not forms:
        reasons = "; ".join(f"{form}: {reason}" for form, reason in left_out.items())
        raise PipelineError(f"{folder}: no form of this model runs ({reasons or 'no model file; run `dvc repro`'})")
    scored = forms[preferred] if preferred in forms else next(iter(forms.values()))
    return Variant(folder, model, settings, recipe_of(settings, folder), forms, scored, left_out)


def accuracy_of(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """A model's test accuracy: its PyTorch model's where it has one, else its runtime's. A pt2e graph is scored
    uncompiled, as `sensitivity` scores it: the same int8 arithmetic, computed in FP32, without a compile per draw
    (evaluate scores it compiled; on 2,000 test images of the default ViT both scored 88.30%)."""
    if holds_pytorch_model(folder):
        model = load_module(folder)[0]
    else:
        model = load_variant(folder, torch.get_num_threads(), images[:2]).scored
    return model_accuracy(model, images, labels)


def deployable_runnable(deployable: Path, engine: str | None) -> Callable:
    """What runs a deployable file as a deployment does: its runtime, torch.compile for a torch.export archive, else
    TorchScript, its int8 weights packed for `engine` (the input contract's)."""
    runtime = runtime_of(deployable)
    if runtime is not None:
        return RUNTIMES[runtime].runnable(deployable, torch.get_num_threads())
    if is_exported(deployable):
        return compiled(load_module(deployable)[0])
    if engine is not None:
        use_engine(engine)
    return load_deployable(deployable)


def model_accuracy(model: Callable, images: torch.Tensor, labels: torch.Tensor) -> float:
    return round((logits(model, images).argmax(1) == labels).float().mean().item(), 4)


def static_accuracy(
    backend: Backend,
    fp32: Fp32Model,
    recipe: StaticRecipe,
    calibration: Calibration,
    data: DataInfo,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """The test accuracy of the static int8 `backend.static` would save for this recipe and calibration: PyTorch's
    int8 module scored in memory (its deployable files, TorchScript and ONNX, take longer to write than it takes
    to score), a runtime's int8 file written to a temporary folder and run by its runtime."""
    with steps_applied(fp32, recipe, data, calibration, backend) as model:
        module = backend.static_module(model, recipe, calibration)
        if module is not None:
            return model_accuracy(module, images, labels)
        with tempfile.TemporaryDirectory() as workdir:
            folder = Path(workdir) / "static"
            backend.static(model, recipe, calibration, folder, data)
            return accuracy_of(folder, images, labels)


MAX_REASON = 300  # characters of a runtime's error kept in forms_left_out


@torch.inference_mode()
def failing(run: Callable, batches: list[torch.Tensor]) -> str | None:
    """Why `run` cannot take these batches (one output row per image), or None if it can."""
    for batch in batches:
        try:
            rows = len(run(batch))
        except Exception as error:  # each runtime and compiler raises classes of its own
            # ONNX Runtime gives the dimensions at fault on its second line: keep every line, joined
            return f"fails on a batch of {len(batch)} ({' '.join(str(error).split())[:MAX_REASON]})"
        if rows != len(batch):
            return f"gives {rows} outputs for a batch of {len(batch)}"
    return None


def recipe_of(settings: dict, folder: Path) -> Recipe | None:
    return recipe_from(settings["recipe"], folder) if settings.get("recipe") else None


def runtime_predictions(variant: Variant, scored: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each runtime form's class for every test image; the scored form's from its logits, `scored`."""
    return {
        runtime: (scored if run is variant.scored else logits(run, images)).argmax(1)
        for runtime, run in variant.forms.items()
        if runtime in RUNTIMES
    }


def runtime_agreement(variant: Variant, predictions: dict, scored: torch.Tensor) -> dict[str, float]:
    """Share of test images on which each runtime predicts what the variant's scored form predicts: for a
    PyTorch model, how faithfully its ONNX file carries it to ONNX Runtime and OpenVINO."""
    return {
        runtime: round(agreement(found, scored.argmax(1)), 4)
        for runtime, found in predictions.items()
        if variant.forms[runtime] is not variant.scored
    }


def kernel_agreement(variant: Variant, predictions: dict, images: torch.Tensor) -> dict[str, float]:
    """Share of test images on which each runtime running the int8 variant's ONNX file predicts what the file's
    own arithmetic predicts: its quantize/dequantize pairs computed in FP32, by ONNX Runtime with graph
    optimizations off. The kernels a runtime fuses them into may compute otherwise: on a CPU without VNNI, the
    16-bit sums of uint8 x int8 pairs saturate once weights reach 127 often (per-channel weights do), which
    `onnxruntime.reduce_range` and `openvino.overflow_fix` avoid with 7-bit weights. Empty where the file has no
    such reference: no ONNX file, or one whose own ops compute in integers (dynamic int8, QOperator)."""
    onnx = variant.folder / ONNX_FILE
    if variant.recipe is None or not onnx.is_file() or missing("onnxruntime") or not holds_qdq_only(onnx):
        return {}
    reference = logits(onnxruntime_runnable(onnx, torch.get_num_threads(), optimized=False), images).argmax(1)
    files = runtime_files(variant.folder)
    return {
        runtime: round(agreement(found, reference), 4)
        for runtime, found in predictions.items()
        if files[runtime] == onnx
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


def against(baseline: dict, variant: dict, interval: list[float]) -> dict:
    """A variant against FP32: accuracy change (fraction) with its 95% interval and what it amounts to, size
    ratios, and best-form speed-up per batch size."""
    return {
        "accuracy_change": round(variant["accuracy"] - baseline["accuracy"], 4),
        "accuracy_change_ci95": interval,
        "accuracy_verdict": verdict(interval),
        "size_ratio": round(variant["size_bytes"] / baseline["size_bytes"], 4),
        "deploy_size_ratio": round(variant["deploy_size_bytes"] / baseline["deploy_size_bytes"], 4),
        "speedup": {key: round(baseline["latency_ms"][key] / value, 4) for key, value in variant["latency_ms"].items()},
        "compared": {
            key: f"int8 {runtime_label(form)} vs fp32 {runtime_label(baseline['best_form'][key])}"
            for key, form in variant["best_form"].items()
        },
    }


def verdict(interval: list[float]) -> str:
    """What an accuracy change amounts to: a change whose interval holds zero is not one the test set can show."""
    low, high = interval
    return "loses accuracy" if high < 0 else "gains accuracy" if low > 0 else "no measurable change"


def plot_data(results: dict) -> dict[str, list[dict]]:
    """Rows for DVC's plots, each file's rows of one shape: per model, accuracy and size; per int8 variant, its
    accuracy change from FP32 with the 95% interval, in points; per model, form and batch size, the latency."""
    variants = [
        {
            "variant": name,
            "accuracy": r["accuracy"],
            "size_kb": r["size_bytes"] / 1000,
            "deploy_size_kb": r["deploy_size_bytes"] / 1000,
        }
        for name, r in results.items()
    ]
    changes = [
        {
            "variant": name,
            "change": round(r["vs_fp32"]["accuracy_change"] * 100, 2),
            **dict(zip(("low", "high"), (round(end * 100, 2) for end in r["vs_fp32"]["accuracy_change_ci95"]))),
        }
        for name, r in results.items()
        if "vs_fp32" in r
    ]
    latency = [
        {"variant": name, "form": form, "batch_size": int(key.removeprefix("batch_")), "latency_ms": t["median_ms"]}
        for name, r in results.items()
        for form, batches in r["forms"].items()
        for key, t in batches.items()
    ]
    return {VARIANTS_PLOT: variants, CHANGES_PLOT: changes, LATENCY_PLOT: latency}


def compare(
    loaded: dict[str, Variant], outputs: dict, latencies: dict, labels: torch.Tensor, images, resamples: int, seed: int
) -> dict:
    """Per model: accuracy and fidelity to FP32, agreement across runtimes and with the ONNX file's own arithmetic,
    sizes, latency; per int8 variant, how it stands against FP32 (the accuracy change's interval from `resamples`
    paired bootstrap draws, seeded) and which layers it kept in FP32."""
    correct = {name: found.argmax(1) == labels for name, found in outputs.items()}
    results = {}
    for name, variant in loaded.items():
        reference = None if variant.recipe is None else outputs["fp32"]
        predictions = runtime_predictions(variant, outputs[name], images)
        results[name] = {
            **score(outputs[name], labels, reference),
            "runtime_agreement": runtime_agreement(variant, predictions, outputs[name]),
            "kernel_agreement": kernel_agreement(variant, predictions, images),
            **measure_size(variant.model, variant.folder),
            **latencies[name],
        }
    for name, variant in loaded.items():
        if variant.recipe is not None:
            interval = change_interval(correct[name], correct["fp32"], resamples, seed)
            results[name]["vs_fp32"] = against(results["fp32"], results[name], interval)
        kept = getattr(variant.recipe, "skip_layers", None)
        if kept is not None:
            results[name]["float_layers"] = {"count": len(kept), "names": " ".join(kept) or "none"}
        steps = variant.recipe.recovery_steps() if isinstance(variant.recipe, StaticRecipe) else []
        if steps:
            results[name]["recovery_steps"] = steps
        if getattr(variant.recipe, "weight_bits", None):
            results[name]["weight_bits"] = variant.recipe.weight_bits
    return results


def summary_line(name: str, result: dict) -> str:
    """One model's accuracy, deployed size and best latency per batch size, as evaluation prints it."""
    timings = "  ".join(f"{key} {ms:.3f} ms ({result['best_form'][key]})" for key, ms in result["latency_ms"].items())
    return f"{name:8} accuracy {result['accuracy']:.4f}  deploy {result['deploy_size_bytes']:,} B  {timings}"


def save_plots(results: dict, folder: Path, labels: torch.Tensor, outputs: dict[str, torch.Tensor]) -> None:
    """The plot data DVC draws: accuracy against size, each accuracy change's interval, latency, and a confusion
    matrix per model in `outputs` (fp32 and best_int8)."""
    for name, rows in plot_data(results).items():
        save_json(rows, folder / name)
    for name, predicted in outputs.items():
        # One row per test image, the form DVC's confusion template counts.
        rows = [{"actual": a, "predicted": p} for a, p in zip(labels.tolist(), predicted.argmax(1).tolist())]
        save_json(rows, folder / CONFUSION_PLOTS[name])


HEADLINE = ("accuracy", "deploy_size_bytes", "latency_ms", "vs_fp32")


def headline(results: dict, best_int8: str) -> dict:
    """What answers the question at a glance, per model: accuracy, deployed size, best latency and, for int8, how
    it stands against FP32 (accuracy change, size ratio, speed-up, what was compared); and the best int8."""
    return {
        **{name: {key: result[key] for key in HEADLINE if key in result} for name, result in results.items()},
        "best_int8": best_int8,
    }
