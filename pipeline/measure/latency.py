"""Latency as a deployment sees it: each model in eager form and in compiled forms, best form reported.

Eager int8 modules pay a fixed Python and dispatch cost per quantized op, which hides their speed on small
models; a traced, frozen TorchScript graph removes most of it. So FP32 and int8 are each measured in every form,
and the fair comparison is best FP32 against best int8, on the same machine in the same run.
"""

import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from pipeline.formats.files import is_exported
from pipeline.formats.torchscript import load_deployable, save_deployable
from pipeline.params import EvaluateParams

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def compiled_forms(model: nn.Module, deployable: Path, kind: str) -> dict[str, nn.Module]:
    """Every form worth timing.

    An eager model: itself, its frozen TorchScript file, and that file optimized for inference; FP32 also under
    torch.compile. A torch.export graph (pt2e int8): only its compiled form, since uncompiled it computes its
    quantize/dequantize pairs in FP32.
    """
    if is_exported(deployable):
        return {"compiled": compiled(model)}
    forms = {"eager": model, "torchscript": load_deployable(deployable)}
    try:  # folds and swaps ops for the CPU (e.g. oneDNN convolutions); helps some models, hurts others
        forms["torchscript_optimized"] = torch.jit.optimize_for_inference(load_deployable(deployable))
    except RuntimeError:
        pass  # not every quantized graph supports it; the other forms still stand
    if kind == "fp32":  # eager int8 modules are opaque to torch.compile, which would only run them as they are
        forms["compiled"] = compiled(model)
    return forms


def compiled(model: nn.Module) -> nn.Module:
    """The model under torch.compile (Inductor), with weights frozen into the graph as constants. For a pt2e
    graph, freezing is what lets Inductor fold each dequantize-op-quantize group into one oneDNN int8 op with
    prepacked weights. Compiling happens at the first call of each batch size (the warm-up calls).

    Each model keeps what it compiled while others compile: a stage loads every model, then scores each, then
    times each, and a reset between models would compile every one again at each step. Two models of one class
    do not share a compiled graph: with frozen weights, Dynamo guards on each parameter's identity."""
    torch._inductor.config.freezing = True
    return torch.compile(model, dynamic=False)


ROUNDS = 10  # turns the runnables timed together take; each turn gives each a block of its calls


@torch.inference_mode()
def time_together(
    runnables: dict, batch: torch.Tensor, warmup: int, repeats: int, max_seconds: float = math.inf
) -> dict:
    """Median and 90th percentile of each runnable's `repeats` timed calls, after `warmup` untimed ones.

    The runnables take turns: in each of 10 rounds every one makes a block of its calls, after one untimed call
    that warms the caches again. A shared machine drifts (clock speed, other load): timed one after the other,
    a CNN's FP32 form once read 98 ms in the pipeline where it read 128-136 ms before and after, which made int8
    look 2.2x faster instead of 2.8x. In turns, the drift falls on all alike. A runnable's calls stop early once
    they add up to `max_seconds` (one call per round still, so at least 10), so a slow model does not take
    minutes.
    """
    for runnable in runnables.values():
        start = time.perf_counter()
        for _ in range(warmup):  # the first call compiles; the rest stop at max_seconds (a 224x224 batch of
            runnable(batch)  # 256 can take seconds a call)
            if time.perf_counter() - start > max_seconds:
                break
    rounds = min(ROUNDS, repeats)
    times = {key: [] for key in runnables}
    for round_index in range(rounds):
        quota = repeats * (round_index + 1) // rounds - repeats * round_index // rounds
        for key, runnable in runnables.items():
            runnable(batch)  # untimed: the first call after another model's runs 2-3x slower, on cold caches
            block = []
            while len(block) < quota and (not block or sum(block) < max_seconds / rounds):
                start = time.perf_counter()
                runnable(batch)
                block.append(time.perf_counter() - start)
            times[key] += block
    return {key: summary(calls) for key, calls in times.items()}


def summary(times: list[float]) -> dict:
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return {"median_ms": round(statistics.median(times) * 1e3, 4), "p90_ms": round(p90 * 1e3, 4), "calls": len(times)}


def time_calls(model, batch: torch.Tensor, warmup: int, repeats: int, max_seconds: float = math.inf) -> dict:
    """One runnable timed alone: see `time_together`."""
    return time_together({"model": model}, batch, warmup, repeats, max_seconds)["model"]


def time_forms(forms: dict, images: torch.Tensor, timing: EvaluateParams) -> dict:
    """Median and p90 of each form at each batch size, the forms timed together (`time_together`):
    {form: {"batch_N": {"median_ms", "p90_ms", "calls"}}}. Keys may be anything, e.g. (variant, form) pairs."""
    by_size = {
        f"batch_{size}": time_together(
            forms, example_batch(images, size), timing.warmup, timing.repeats, timing.max_seconds
        )
        for size in timing.batch_sizes
    }
    return {form: {key: timings[form] for key, timings in by_size.items()} for form in forms}


def time_models(forms: dict[str, dict], images: torch.Tensor, timing: EvaluateParams) -> dict[str, dict]:
    """Timings of several models' forms, {model: {form: runnable}} in, {model: {form: {"batch_N": timing}}} out.
    Every form of every model is timed together, so that ratios compare figures taken at the same moments."""
    timed = time_forms(
        {(name, form): run for name, found in forms.items() for form, run in found.items()}, images, timing
    )
    return {name: {form: timed[name, form] for form in found} for name, found in forms.items()}


def unsaved_forms(model: nn.Module, kind: str, example: torch.Tensor) -> dict[str, nn.Module]:
    """Every form of an eager model not saved before, through a TorchScript file written for the purpose (the
    forms hold what they loaded, so the file goes once they are made)."""
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "model.ts"
        save_deployable(model, example, path)
        return compiled_forms(model, path, kind)


def example_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`batch_size` test images, cycling through the set if it is smaller."""
    copies = -(-batch_size // len(images))
    return images[:batch_size].repeat(copies, 1, 1, 1)[:batch_size]


def best_of(forms: dict[str, dict]) -> dict[str, dict]:
    """For each batch size, the form with the lowest median."""
    batch_keys = next(iter(forms.values())).keys()
    return {
        key: min(({"form": form, **timings[key]} for form, timings in forms.items()), key=lambda t: t["median_ms"])
        for key in batch_keys
    }


def cpu_info() -> dict[str, str]:
    """The fields /proc/cpuinfo gives for the first processor (Linux); empty where there is no such file."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in first.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def cpu_model(info: dict[str, str]) -> str:
    """The CPU's model name with its family and model numbers: int8 speed and FP32 training's rounding both depend
    on it, and virtual machines often report a bare name such as "AMD EPYC" for several generations."""
    if not info:
        return platform.processor() or "unknown"
    name, family, model = (info.get(key, "?") for key in ("model name", "cpu family", "model"))
    return f"{name} (family {family}, model {model})"


def cpu_flags(info: dict[str, str]) -> list[str]:
    """The instruction-set extensions int8 kernels use, as the CPU reports them."""
    flags = set(info.get("flags", "").split())
    return [flag for flag in CPU_FLAGS if flag in flags]
