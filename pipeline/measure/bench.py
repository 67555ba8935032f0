"""The benchmark behind `python -m pipeline bench`: int8 against FP32 speed, per architecture, backend and runtime.

Speed does not depend on what the weights are, so each architecture of params.yaml is built fresh (seeded) and
calibrated on random images: the bench needs no trained model. Each backend of the registry makes its dynamic and
static int8 with the recipes params.yaml asks for, as the stages do, and every model is loaded from its folder and
timed in every form on every installed runtime, as evaluation loads and times it (PyTorch: eager, TorchScript,
TorchScript optimized, torch.compile; its ONNX file on ONNX Runtime and OpenVINO; OpenVINO's own file), all the
forms of one architecture taking turns.
Each row's int8 columns give the fastest form of that backend's variant, on the runtimes of the row; the FP32
column is always the fastest FP32 on any runtime, the one a user could deploy instead. Not a DVC stage: its
figures belong to the machine and the moment, and are printed, not cached.
"""

import gc
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import typer

from pipeline.backends.interface import Calibration
from pipeline.backends.registry import BACKENDS, planned
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32, save_trained
from pipeline.formats.fp32_export import export_fp32
from pipeline.markdown import row_line, table
from pipeline.measure.latency import best_of, example_batch, time_models
from pipeline.measure.variants import load_variant, runtime_label
from pipeline.models.architectures import architecture, build
from pipeline.params import Params
from pipeline.runtimes import RUNTIMES

# The engines `quantize.engine: auto` chooses between; `--engine fbgemm --engine qnnpack` compares others too.
ENGINES = ("x86", "onednn")
EVERY_RUNTIME = ("pytorch", *RUNTIMES)


def bench_data(channels: int, size: int, classes: int) -> DataInfo:
    """What the benched models are built for: square images of `size` pixels and `channels` channels (the IDX data
    sets: 1 and 28; ImageNet's models: 3 and 224), and `classes` classes."""
    return DataInfo("bench", channels, size, size, tuple(str(label) for label in range(classes)))


def cell(entry: dict) -> str:
    return f"{entry['median_ms']:.3f} {entry['form']}"


def setups(params: Params, engines: list[str], backends: list[str]) -> dict[str, Params]:
    """params.yaml once per backend to bench, and once per engine for a backend whose kernels depend on it (eager):
    {label: params}."""
    found = {}
    for name in backends:
        per_engine = BACKENDS[name]().uses_engine
        for engine in engines if per_engine else [params.quantize.engine]:
            quantize = params.quantize.model_copy(update={"backend": name, "engine": engine})
            found[f"{name} {engine}" if per_engine else name] = params.model_copy(update={"quantize": quantize})
    return found


@dataclass
class Tables:
    """What `bench` reports: the FP32 table's rows, the int8 table's, what to deploy, and what was left out, why."""

    fp32: list[str] = field(default_factory=list)
    int8: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def extend(self, other: "Tables") -> None:
        for name in ("fp32", "int8", "choices", "left_out"):
            getattr(self, name).extend(getattr(other, name))


def int8_folders(
    setup: Params, label: str, workdir: Path, calibration: Calibration, data: DataInfo, left_out: list[str]
) -> dict[str, Path]:
    """The dynamic and static int8 folders one backend makes of the FP32 model in `workdir / "fp32"`, as the
    stages make them; a method it cannot do is left out, its reason printed and added to `left_out`."""
    fp32, folders = read_fp32(workdir / "fp32"), {}
    for method in ("dynamic", "static"):
        folder = workdir / f"{label}_{method}".replace(" ", "_")
        try:
            backend, recipe = planned(setup, method)
            if method == "dynamic":
                backend.dynamic(fp32, recipe, folder, data)
            else:
                backend.static(fp32, recipe, calibration, folder, data)
        except PipelineError as error:
            left_out.append(f"- {fp32.arch['name']} {label} {method}: {error}")
            typer.echo(left_out[-1], err=True)
            continue
        folders[method] = folder
    return folders


def on_runtime(forms: dict, runtime: str) -> dict:
    """The forms a runtime runs (PyTorch's: every form that is not another runtime's)."""
    return {form: run for form, run in forms.items() if (form if form in RUNTIMES else "pytorch") == runtime}


def bench_tables(params: Params, archs: list[str], engines, backends, timing, data: DataInfo) -> Tables:
    """The FP32 table's lines and the int8 table's, each architecture benched in a folder of its own, on random
    images of the data's shape (seeded), which also calibrate static int8; what to deploy, and what was left out."""
    count = max(*timing.batch_sizes, params.calibration.batches)  # one image at least for each calibration batch
    images = torch.rand(count, *data.input_shape, generator=torch.Generator().manual_seed(0))
    header = ["arch", "backend", "runtime", "batch", "fp32", "dynamic int8", "static int8", "dynamic x", "static x"]
    fp32_header = ["arch", "batch", *(f"fp32 {runtime}" for runtime in EVERY_RUNTIME)]
    tables = Tables(fp32=table(fp32_header, []), int8=table(header, []))
    for name in archs:
        arch_params = params.model_copy(update={"train": params.train.model_copy(update={"arch": name})})
        with tempfile.TemporaryDirectory() as workdir:
            tables.extend(
                bench_arch(arch_params, setups(arch_params, engines, backends), timing, images, Path(workdir), data)
            )
        torch.compiler.reset()  # the compiled forms' caches would otherwise hold each architecture to the end
        gc.collect()
    return tables


def bench_arch(
    params: Params, setups: dict[str, Params], timing, images: torch.Tensor, workdir: Path, data: DataInfo
) -> Tables:
    """The table rows of one architecture: every backend on every runtime, and FP32 on each runtime, all its forms
    timed together."""
    arch = architecture(params.train, data)
    torch.manual_seed(params.seed)
    save_trained(build(arch).eval(), arch, workdir / "trained")
    export_fp32(workdir / "trained", workdir / "fp32", data)
    threads = params.evaluate.threads
    probe = example_batch(images, timing.batch_sizes[0])
    forms = {"fp32": load_variant(workdir / "fp32", threads, probe).forms}
    calibration = Calibration(images, params.calibration.batches)
    found = Tables()
    for label, setup in setups.items():
        for method, folder in int8_folders(setup, label, workdir, calibration, data, found.left_out).items():
            forms[label, method] = load_variant(folder, threads, probe).forms
    timed = time_models(forms, images, timing)
    fastest_fp32 = best_of(timed["fp32"])
    for key in fastest_fp32:
        on = [on_runtime(timed["fp32"], runtime) for runtime in EVERY_RUNTIME]
        cells = [cell(best_of(found)[key]) if found else "left out" for found in on]
        found.fp32.append(row_line([arch["name"], key.removeprefix("batch_"), *cells]))
    for key, fp32_best in fastest_fp32.items():
        int8 = {name: best_of(forms)[key] for name, forms in timed.items() if name != "fp32"}
        found.choices.append(deploy_line(arch["name"], key, fp32_best, int8))
    for backend, runtime in itertools.product(setups, EVERY_RUNTIME):
        on = {method: on_runtime(timed.get((backend, method), {}), runtime) for method in ("dynamic", "static")}
        if not any(on.values()):
            continue
        for key, fp32_best in fastest_fp32.items():
            best = {method: best_of(forms)[key] if forms else None for method, forms in on.items()}
            row = [arch["name"], backend, runtime, key.removeprefix("batch_"), cell(fp32_best)]
            row += [cell(entry) if entry else "-" for entry in best.values()]
            row += [f"{fp32_best['median_ms'] / entry['median_ms']:.2f}" if entry else "-" for entry in best.values()]
            found.int8.append(row_line(row))
            typer.echo(found.int8[-1])
    return found


def deploy_line(arch: str, key: str, fp32: dict, int8: dict[tuple[str, str], dict]) -> str:
    """What to deploy for one architecture at one batch size: the fastest int8 of any backend on any runtime, if
    it beats the fastest FP32, else FP32."""
    batch = key.replace("_", " ")
    fp32_form = f"FP32 on {runtime_label(fp32['form'])} ({fp32['median_ms']:.3f} ms)"
    if not int8:
        return f"- {arch}, {batch}: {fp32_form}; no int8 was made"
    (backend, method), best = min(int8.items(), key=lambda item: item[1]["median_ms"])
    speedup = fp32["median_ms"] / best["median_ms"]
    made = f"{method} int8 by {backend} on {runtime_label(best['form'])} ({best['median_ms']:.3f} ms)"
    if speedup <= 1:
        return f"- {arch}, {batch}: {fp32_form}; the fastest int8, {made}, is {speedup:.2f}x"
    return f"- {arch}, {batch}: {made}, {speedup:.2f}x the fastest {fp32_form}"
