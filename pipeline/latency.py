"""Latency as a deployment sees it: each model in eager form and in compiled forms, best form reported.

Eager int8 modules pay a fixed Python and dispatch cost per quantized op, which hides their speed on small
models; a traced, frozen TorchScript graph removes most of it. So FP32 and int8 are each measured in every form,
and the fair comparison is best FP32 against best int8, on the same machine in the same run.
"""

import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import atomic_path, first_line
from pipeline.errors import PipelineError
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


def compiled_forms(model: nn.Module, deployable: Path) -> dict[str, nn.Module]:
    """Every form worth timing: eager, the frozen TorchScript file, and that file optimized for inference."""
    forms = {"eager": model, "torchscript": load_deployable(deployable)}
    try:  # folds and swaps ops for the CPU (e.g. oneDNN convolutions); helps some models, hurts others
        forms["torchscript_optimized"] = torch.jit.optimize_for_inference(load_deployable(deployable))
    except RuntimeError:
        pass  # not every quantized graph supports it; the other forms still stand
    return forms


@torch.inference_mode()
def time_calls(model: nn.Module, batch: torch.Tensor, warmup: int, repeats: int) -> dict:
    """Median and 90th percentile of `repeats` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return {"median_ms": round(statistics.median(times) * 1e3, 4), "p90_ms": round(p90 * 1e3, 4)}


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
