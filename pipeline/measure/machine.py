"""The machine a measurement was made on, and FP32 latency on its GPU where it has one."""

import platform
from importlib.metadata import version

import torch
from torch import nn

from pipeline.backends.interface import Backend
from pipeline.measure.latency import cpu_flags, cpu_info, cpu_model, example_batch, time_calls
from pipeline.optional import missing
from pipeline.params import EvaluateParams
from pipeline.runtimes import RUNTIMES


def environment(threads: int, backend: Backend) -> dict:
    """What the int8 variants were made with and measured on: backend, packages, CPU, threads."""
    return {
        "backend": backend.name,
        "backend_label": backend.label(),
        "torchao": version("torchao") if "torchao" in backend.requires else "not used",
        "nncf": version("nncf") if "nncf" in backend.requires else "not used",
        "quantized_engine": backend.kernels(),
        **machine(threads),
    }


def machine(threads: int) -> dict:
    """The CPU, the thread count, and the versions of torch and of every runtime (or why one is not there)."""
    cpu = cpu_info()
    return {
        "torch": torch.__version__,
        **{runtime: "not installed" if missing(runtime) else version(runtime) for runtime in RUNTIMES},
        "cpu_model": cpu_model(cpu),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": " ".join(cpu_flags(cpu)),
        "processor": platform.machine(),
        "threads": threads,
    }


def machine_line(environment: dict) -> str:
    """The CPU, threads, torch and runtimes a measurement ran on, from `machine`'s record of them."""
    runtimes = ", ".join(f"{name} {environment.get(name, 'not recorded')}" for name in RUNTIMES)
    return (
        f"{environment['cpu_model']} ({environment['cpu_flags'] or 'no AVX2, AVX-512 or VNNI flags'}), "
        f"{environment['threads']} thread(s), torch {environment['torch']}, {runtimes}"
    )


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
