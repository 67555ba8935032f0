"""`python -m pipeline bench`: int8 against FP32 speed, per architecture, backend and engine, in one run.

Speed does not depend on what the weights are, so each architecture of params.yaml is built fresh (seeded) and
calibrated on random images: the bench needs no trained model. Every model is timed in every form (eager,
TorchScript, TorchScript optimized, torch.compile for FP32; compiled for pt2e int8), all the forms of one
architecture taking turns, and the table compares the best FP32 form with the best int8 form. Not a DVC stage:
its figures belong to the machine and the moment, and are printed, not cached.
"""

import itertools

import torch
import typer
from torch import nn

from pipeline.data import DataInfo
from pipeline.latency import best_of, compiled, time_models, unsaved_forms
from pipeline.models import architecture, build, example_input
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.quantize import has_eager_twin, quantize_dynamic, quantize_static, static_qconfig, use_engine

# The engines `quantize.engine: auto` chooses between; `--engine fbgemm --engine qnnpack` compares others too.
ENGINES = ("x86", "onednn")
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
    """Print best FP32 against best int8 latency per architecture, backend and quantized engine."""
    params = load_params(params_file)
    timing = params.evaluate.model_copy(update={"repeats": repeats})
    unknown = sorted(set(engines) - set(torch.backends.quantized.supported_engines))
    if unknown:
        raise typer.BadParameter(
            f"{unknown} not supported here; choose from {torch.backends.quantized.supported_engines}"
        )
    torch.set_num_threads(params.evaluate.threads)
    images = torch.rand(max(timing.batch_sizes), *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    typer.echo(f"threads {params.evaluate.threads}, torch {torch.__version__}, median ms and best form per batch\n")
    header = ["arch", "backend", "batch", "fp32", "dynamic int8", "static int8", "dynamic x faster", "static x faster"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in archs:
        arch = architecture(params.train.model_copy(update={"arch": name}), IDX_DATA)
        torch.manual_seed(params.seed)
        fp32 = build(arch).eval()
        forms = {"fp32": unsaved_forms(fp32, "fp32", example_input(arch))}
        backends = []
        for backend, variants, exported in int8_variants(fp32, images, engines, pt2e, params.quantize.per_channel):
            backends.append(backend)
            for name, model in variants.items():  # eager int8 weights stay packed for the engine they were made on
                found = {"compiled": compiled(model)} if exported else unsaved_forms(model, "int8", example_input(arch))
                forms[backend, name] = found
        best = {model: best_of(timings) for model, timings in time_models(forms, images, timing).items()}
        for backend, key in itertools.product(backends, best["fp32"]):
            speedups = [
                f"{best['fp32'][key]['median_ms'] / best[backend, name][key]['median_ms']:.2f}"
                for name in ("dynamic", "static")
            ]
            row = [
                arch["name"],
                backend,
                key.removeprefix("batch_"),
                cell(best["fp32"][key]),
                cell(best[backend, "dynamic"][key]),
                cell(best[backend, "static"][key]),
                *speedups,
            ]
            lines.append("| " + " | ".join(row) + " |")
            typer.echo(lines[-1])
    typer.echo("\n" + "\n".join(lines))
