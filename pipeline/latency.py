"""Latency as a deployment sees it: each model in eager form and in compiled forms, best form reported.

Eager int8 modules pay a fixed Python and dispatch cost per quantized op, which hides their speed on small
models; a traced, frozen TorchScript graph removes most of it. So FP32 and int8 are each measured in every form,
and the fair comparison is best FP32 against best int8, on the same machine in the same run.
"""

import math
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import atomic_path, first_line
from pipeline.errors import PipelineError
from pipeline.params import EvaluateParams
from pipeline.prepare import IMAGE_SIDE

EXAMPLE_INPUT = torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def save_deployable(model: nn.Module, path: Path) -> None:
    """The model traced and frozen into TorchScript: one graph, weights inlined, loadable without this code."""
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing turns QuantStub's scale and zero point into constants, which is what freezing is for.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), EXAMPLE_INPUT))
    with atomic_path(path) as temporary:
        torch.jit.save(frozen, str(temporary))


def load_deployable(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file. For int8 the quantized engine must already be set: weights are packed for it."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise PipelineError(f"{path}: not a readable TorchScript file ({first_line(error)})") from None


def compiled_forms(model: nn.Module, deployable: Path, kind: str) -> dict[str, nn.Module]:
    """Every form worth timing.

    An eager model: itself, its frozen TorchScript file, and that file optimized for inference; FP32 also under
    torch.compile. A torch.export graph (pt2e int8): only its compiled form, since uncompiled it computes its
    quantize/dequantize pairs in FP32.
    """
    if deployable.suffix == ".pt2":
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
    prepacked weights. Compiling happens at the first call of each batch size (the warm-up calls)."""
    torch._inductor.config.freezing = True
    torch._dynamo.reset()  # each model compiles afresh; guards left by an earlier model would force recompiles
    return torch.compile(model, dynamic=False)


@torch.inference_mode()
def time_calls(model: nn.Module, batch: torch.Tensor, warmup: int, repeats: int, max_seconds: float = math.inf) -> dict:
    """Median and 90th percentile of `repeats` timed calls, after `warmup` untimed ones. Timing stops early once
    the timed calls add up to `max_seconds` (with at least 10 taken), so a slow model does not take minutes."""
    for _ in range(warmup):
        model(batch)
    times = []
    while len(times) < repeats and (len(times) < 10 or sum(times) < max_seconds):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return {"median_ms": round(statistics.median(times) * 1e3, 4), "p90_ms": round(p90 * 1e3, 4), "calls": len(times)}


def time_forms(forms: dict[str, nn.Module], images: torch.Tensor, timing: EvaluateParams) -> dict:
    """Median and p90 of each form at each batch size: {form: {"batch_N": {"median_ms", "p90_ms"}}}."""
    return {
        form: {
            f"batch_{size}": time_calls(
                runnable, example_batch(images, size), timing.warmup, timing.repeats, timing.max_seconds
            )
            for size in timing.batch_sizes
        }
        for form, runnable in forms.items()
    }


def best_forms(model: nn.Module, kind: str, images: torch.Tensor, timing: EvaluateParams, workdir: Path) -> dict:
    """The fastest form of an eager model not yet saved: {"batch_N": {"form", "median_ms", "p90_ms"}}."""
    save_deployable(model, workdir / "model.ts")
    return best_of(time_forms(compiled_forms(model, workdir / "model.ts", kind), images, timing))


def example_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`batch_size` test images, cycling through the set if it is smaller."""
    copies = -(-batch_size // len(images))
    return images.repeat(copies, 1, 1, 1)[:batch_size]


def best_of(forms: dict[str, dict]) -> dict[str, dict]:
    """For each batch size, the form with the lowest median."""
    batch_keys = next(iter(forms.values())).keys()
    return {
        key: min(({"form": form, **timings[key]} for form, timings in forms.items()), key=lambda t: t["median_ms"])
        for key in batch_keys
    }


def cpu_flags() -> list[str]:
    """The instruction-set extensions int8 kernels use, as the CPU reports them (Linux)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return []
    return [flag for flag in CPU_FLAGS if flag in flags]
