"""`python -m pipeline bench`: int8 against FP32 speed, per architecture and quantized engine, in one run.

Speed does not depend on what the weights are, so each architecture of params.yaml is built fresh (seeded) and
calibrated on random images: the bench needs no trained model. Every model is timed in every form (eager,
TorchScript, TorchScript optimized) and the table compares the best FP32 form with the best int8 form. Not a
DVC stage: its figures belong to the machine and the moment, and are printed, not cached.
"""

import tempfile
from pathlib import Path

import torch
import typer

from pipeline.latency import best_of, compiled_forms, example_batch, save_deployable, time_calls
from pipeline.models import build
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.quantize import quantize_dynamic, quantize_static, static_qconfig, use_engine

ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def best_forms(model, images, sizes, warmup, repeats, workdir: Path) -> dict:
    """The fastest form of `model` at each batch size: {"batch_N": {"form", "median_ms", "p90_ms"}}."""
    save_deployable(model, workdir / "model.ts")
    forms = compiled_forms(model, workdir / "model.ts")
    return best_of(
        {
            form: {f"batch_{n}": time_calls(runnable, example_batch(images, n), warmup, repeats) for n in sizes}
            for form, runnable in forms.items()
        }
    )


def cell(entry: dict) -> str:
    return f"{entry['median_ms']:.3f} {entry['form']}"


def command(
    params_file: ParamsOption = PARAMS_FILE,
    engines: list[str] = typer.Option(list(ENGINES), "--engine", help="quantized engines to compare"),
    repeats: int = typer.Option(100, min=3, help="timed calls per form and batch size"),
) -> None:
    """Print best FP32 against best int8 latency for the MLP and the CNN on each quantized engine."""
    params = load_params(params_file)
    sizes, warmup = params.evaluate.batch_sizes, params.evaluate.warmup
    unknown = sorted(set(engines) - set(torch.backends.quantized.supported_engines))
    if unknown:
        raise typer.BadParameter(
            f"{unknown} not supported here; choose from {torch.backends.quantized.supported_engines}"
        )
    torch.set_num_threads(params.evaluate.threads)
    images = torch.rand(max(sizes), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    typer.echo(f"threads {params.evaluate.threads}, torch {torch.__version__}, median ms and best form per batch\n")
    header = ["arch", "engine", "batch", "fp32", "dynamic int8", "static int8", "dynamic x faster", "static x faster"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    with tempfile.TemporaryDirectory() as workdir:
        for arch in (
            {"name": "mlp", "hidden": list(params.train.hidden)},
            {"name": "cnn", "channels": list(params.train.channels)},
        ):
            torch.manual_seed(params.seed)
            fp32 = build(arch).eval()
            fp32_best = best_forms(fp32, images, sizes, warmup, repeats, Path(workdir))
            for engine in engines:
                use_engine(engine)
                variants = {
                    "dynamic": quantize_dynamic(fp32),
                    "static": quantize_static(fp32, static_qconfig("minmax", False, engine), images, 4, fused=True),
                }
                best = {
                    name: best_forms(model, images, sizes, warmup, repeats, Path(workdir))
                    for name, model in variants.items()
                }
                for key in fp32_best:
                    speedups = [
                        f"{fp32_best[key]['median_ms'] / best[name][key]['median_ms']:.2f}" for name in variants
                    ]
                    row = [
                        arch["name"],
                        engine,
                        key.removeprefix("batch_"),
                        cell(fp32_best[key]),
                        cell(best["dynamic"][key]),
                        cell(best["static"][key]),
                        *speedups,
                    ]
                    lines.append("| " + " | ".join(row) + " |")
                    typer.echo(lines[-1])
    typer.echo("\n" + "\n".join(lines))
