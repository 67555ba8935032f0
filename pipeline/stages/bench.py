"""`python -m pipeline bench`: int8 against FP32 speed, per architecture, backend and runtime, in one run.

Speed does not depend on what the weights are, so each architecture of params.yaml is built fresh (seeded) and
calibrated on random images: the bench needs no trained model. Every model is timed in every form on every
installed runtime, as evaluation times it (PyTorch: eager, TorchScript, TorchScript optimized, torch.compile;
its ONNX file on ONNX Runtime and OpenVINO; OpenVINO's own file), all the forms of one architecture taking turns.
Each row's int8 columns give the fastest form of that backend's variant, on the runtimes of the row; the FP32
column is always the fastest FP32 on any runtime, the one a user could deploy instead. Not a DVC stage: its
figures belong to the machine and the moment, and are printed, not cached.
"""

import itertools
import tempfile
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
import typer
from torch import nn

from pipeline.data import DataInfo
from pipeline.exchange import export_onnx
from pipeline.latency import best_of, compiled, time_models, unsaved_forms
from pipeline.models import architecture, build, example_input
from pipeline.params import PARAMS_FILE, Params, ParamsOption, load_params
from pipeline.quantize import has_eager_twin, quantize_dynamic, quantize_static, static_qconfig, use_engine
from pipeline.runtime_quantize import onnxruntime_dynamic, onnxruntime_static, openvino_dynamic, openvino_static
from pipeline.runtimes import ONNX_FILE, OPENVINO_FILE, RUNTIMES, missing, runtime_forms

# The engines `quantize.engine: auto` chooses between; `--engine fbgemm --engine qnnpack` compares others too.
ENGINES = ("x86", "onednn")
EVERY_RUNTIME = ("pytorch", *RUNTIMES)
# Models of the IDX data sets' shape: 28x28 grey images, 10 classes.
IDX_DATA = DataInfo("bench", 1, 28, 28, tuple(str(label) for label in range(10)))
INPUT_SHAPE = IDX_DATA.input_shape


def cell(entry: dict) -> str:
    return f"{entry['median_ms']:.3f} {entry['form']}"


def int8_variants(fp32: nn.Module, images: torch.Tensor, engines: list[str], pt2e: bool, per_channel: bool):
    """(backend label, {"dynamic": model, "static": model}, is_exported) for each eager engine (models with an
    eager int8 twin), then pt2e."""
    for engine in engines if has_eager_twin(fp32) else ():
        use_engine(engine)
        static = quantize_static(fp32, static_qconfig("minmax", per_channel, engine), images, 4, fused=True)
        yield f"eager {engine}", {"dynamic": quantize_dynamic(fp32, per_channel), "static": static}, False
    if pt2e:
        from pipeline import pt2e as torchao_flow

        static = torchao_flow.quantize_static(fp32, torchao_flow.static_config("minmax", False), images, 4)
        yield "pt2e", {"dynamic": torchao_flow.quantize_dynamic(fp32, INPUT_SHAPE), "static": static}, True


def pytorch_forms(
    model: nn.Module, kind: str, arch: dict, exported: bool, folder: Path, threads: int, ort_dynamic=None
) -> dict:
    """A PyTorch model's forms, and its ONNX file's on the runtimes installed (`folder` receives the file;
    `ort_dynamic` writes it where PyTorch cannot export the model: dynamic int8)."""
    folder.mkdir()
    forms = {"compiled": compiled(model)} if exported else unsaved_forms(model, kind, example_input(arch))
    if ort_dynamic is None:
        export_onnx(model, example_input(arch), {}, folder / ONNX_FILE)
    else:
        ort_dynamic({}, folder / ONNX_FILE)
    return {**forms, **runtime_forms(folder, threads)[0]}


def runtime_variants(fp32_onnx: Path, images: torch.Tensor, params: Params, workdir: Path):
    """(backend, {"dynamic": forms, "static": forms}) for each installed runtime, by its own quantizer."""
    ort, ov, per_channel = params.onnxruntime, params.openvino.preset, params.quantize.per_channel
    makers = {
        "onnxruntime": (
            ONNX_FILE,
            lambda path: onnxruntime_dynamic(fp32_onnx, per_channel, ort, {}, path),
            lambda path: onnxruntime_static(fp32_onnx, images, 4, per_channel, "minmax", False, [], ort, {}, path),
        ),
        "openvino": (
            OPENVINO_FILE,
            lambda path: openvino_dynamic(fp32_onnx, ov, {}, path),
            lambda path: openvino_static(fp32_onnx, images, ov, [], {}, path),
        ),
    }
    for backend, (file_name, dynamic, static) in makers.items():
        if missing(backend) or (backend == "openvino" and missing("nncf")):
            continue
        forms = {}
        for method, make in (("dynamic", dynamic), ("static", static)):
            folder = workdir / f"{backend}_{method}"
            folder.mkdir()
            make(folder / file_name)
            forms[method] = runtime_forms(folder, params.evaluate.threads)[0]
        yield backend, forms


def on_runtime(forms: dict, runtime: str) -> dict:
    """The forms a runtime runs (PyTorch's: every form that is not another runtime's)."""
    return {form: run for form, run in forms.items() if (form if form in RUNTIMES else "pytorch") == runtime}


def command(
    params_file: ParamsOption = PARAMS_FILE,
    engines: list[str] = typer.Option(list(ENGINES), "--engine", help="quantized engines of the eager backend"),
    pt2e: bool = typer.Option(True, help="also the pt2e backend (torchao, compiled by torch.compile)"),
    archs: list[str] = typer.Option(
        ["mlp", "cnn"], "--arch", help="train.arch values to compare: mlp, cnn, resnet18, ..."
    ),
    repeats: int = typer.Option(
        100, min=3, help="timed calls per form and batch size (evaluate.max_seconds caps them)"
    ),
) -> None:
    """Print the fastest FP32 against the fastest int8 per architecture, backend and runtime."""
    params = load_params(params_file)
    timing = params.evaluate.model_copy(update={"repeats": repeats})
    unknown = sorted(set(engines) - set(torch.backends.quantized.supported_engines))
    if unknown:
        raise typer.BadParameter(
            f"{unknown} not supported here; choose from {torch.backends.quantized.supported_engines}"
        )
    torch.set_num_threads(params.evaluate.threads)
    images = torch.rand(max(timing.batch_sizes), *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    runtimes = ", ".join(f"{name} {'not installed' if missing(name) else version(name)}" for name in RUNTIMES)
    typer.echo(f"threads {params.evaluate.threads}, torch {torch.__version__}, {runtimes}")
    typer.echo("median ms and fastest form per batch; fp32: the fastest on any runtime\n")
    header = ["arch", "backend", "runtime", "batch", "fp32", "dynamic int8", "static int8", "dynamic x", "static x"]
    fp32_header = ["arch", "batch", *(f"fp32 {runtime}" for runtime in EVERY_RUNTIME)]
    lines, fp32_lines = [table_row(header), table_rule(header)], [table_row(fp32_header), table_rule(fp32_header)]
    for name in archs:
        with tempfile.TemporaryDirectory() as workdir:
            rows, fp32_rows = bench_arch(name, params, timing, images, engines, pt2e, Path(workdir))
        lines += rows
        fp32_lines += fp32_rows
    typer.echo("\n" + "\n".join(fp32_lines) + "\n\n" + "\n".join(lines))


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_rule(cells: list[str]) -> str:
    return "|" + "---|" * len(cells)


def bench_arch(name: str, params: Params, timing, images: torch.Tensor, engines, pt2e: bool, workdir: Path):
    """The table rows of one architecture: every backend on every runtime, and FP32 on each runtime, all its forms
    timed together."""
    arch = architecture(params.train.model_copy(update={"arch": name}), IDX_DATA)
    torch.manual_seed(params.seed)
    fp32 = build(arch).eval()
    threads = params.evaluate.threads
    forms = {"fp32": pytorch_forms(fp32, "fp32", arch, False, workdir / "fp32", threads)}
    per_channel = params.quantize.per_channel
    ort_dynamic = partial(onnxruntime_dynamic, workdir / "fp32" / ONNX_FILE, per_channel, params.onnxruntime)
    backends = []
    for backend, variants, exported in int8_variants(fp32, images, engines, pt2e, per_channel):
        backends.append(backend)
        for method, model in variants.items():  # eager int8 weights stay packed for the engine they were made on
            folder = workdir / f"{backend}_{method}".replace(" ", "_")
            dynamic_twin = ort_dynamic if method == "dynamic" else None
            forms[backend, method] = pytorch_forms(model, "int8", arch, exported, folder, threads, dynamic_twin)
    for backend, variants in runtime_variants(workdir / "fp32" / ONNX_FILE, images, params, workdir):
        backends.append(backend)
        forms |= {(backend, method): found for method, found in variants.items()}
    timed = time_models(forms, images, timing)
    fastest_fp32 = best_of(timed["fp32"])
    fp32_rows = []
    for key in fastest_fp32:
        on = [on_runtime(timed["fp32"], runtime) for runtime in EVERY_RUNTIME]
        cells = [cell(best_of(found)[key]) if found else "not installed" for found in on]
        fp32_rows.append(table_row([arch["name"], key.removeprefix("batch_"), *cells]))
    rows = []
    for backend, runtime in itertools.product(backends, EVERY_RUNTIME):
        on = {method: on_runtime(timed[backend, method], runtime) for method in ("dynamic", "static")}
        if not any(on.values()):
            continue
        for key, fp32_best in fastest_fp32.items():
            best = {method: best_of(found)[key] if found else None for method, found in on.items()}
            row = [arch["name"], backend, runtime, key.removeprefix("batch_"), cell(fp32_best)]
            row += [cell(entry) if entry else "-" for entry in best.values()]
            row += [f"{fp32_best['median_ms'] / entry['median_ms']:.2f}" if entry else "-" for entry in best.values()]
            rows.append(table_row(row))
            typer.echo(rows[-1])
    return rows, fp32_rows
