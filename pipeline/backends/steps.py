"""The recovery steps that transform the FP32 model before any backend quantizes it, in the order they run:
cross-layer equalization (`static.equalize`), SmoothQuant (`static.smooth_quant`), learned rounding
(`static.rounding`), which rounds the weights as the steps before it left them, then the project's own bias
correction (`static.bias_correction`) where the backend has none of its own (eager, onnxruntime), which measures
the shift the rounded weights leave.
"""

import contextlib
import copy
import tempfile
from pathlib import Path

import typer

from pipeline.backends.adaround import Grid, adaround
from pipeline.backends.bias_correction import correct_biases
from pipeline.backends.equalize import equalize
from pipeline.backends.interface import Backend, Calibration
from pipeline.backends.recipes import StaticRecipe
from pipeline.backends.smooth_quant import smooth
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import Fp32Model, read_fp32, save_trained
from pipeline.formats.fp32_export import export_fp32


def equalized(model, name: str):
    model, pairs, unpaired = equalize(model)
    if not pairs:
        raise PipelineError(
            f"static.equalize: no Conv2d or Linear in {name} feeds another through a ReLU alone (an exported graph "
            "has no layers to pair); set it to false"
        )
    shown = ", ".join(unpaired[:5]) + (f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else "")
    typer.echo(f"static.equalize: {len(pairs)} layer pairs equalized; not in a pair: {shown or 'none'}", err=True)
    return model


def rounded(model, name: str, recipe: StaticRecipe, calibration: Calibration, backend: Backend):
    grid = Grid(*backend.weight_range(recipe))
    model, learned = adaround(model, calibration.images, grid, recipe.adaround_iterations, recipe.skip_layers)
    if not learned:
        raise PipelineError(
            f"static.rounding: {name} has no Conv2d or Linear module to round (an exported graph has none); set it "
            "to nearest"
        )
    return model


def corrected(model, name: str, recipe: StaticRecipe, calibration: Calibration, backend: Backend, mode: str):
    grid = Grid(*backend.weight_range(recipe))
    model, shifts = correct_biases(model, calibration.images, grid, mode, recipe.skip_layers)
    if not shifts:
        raise PipelineError(
            f"static.bias_correction: {name} has no Conv2d or Linear module whose bias the {backend.name} backend "
            "could have corrected (an exported graph has none); set it to null"
        )
    return model


@contextlib.contextmanager
def steps_applied(fp32: Fp32Model, recipe: StaticRecipe, data: DataInfo, calibration: Calibration, backend: Backend):
    """The FP32 model as the recipe's transforms leave it, in a temporary model folder with its ONNX file (which the
    runtimes' quantizers read), for a conversion to quantize; the model itself where the recipe asks for none."""
    correction = backend.projects_correction(recipe)
    if not (recipe.equalize or recipe.smooth_quant or recipe.rounding or correction):
        yield fp32
        return
    name = type(fp32.module).__name__
    model = equalized(copy.deepcopy(fp32.module), name) if recipe.equalize else fp32.module
    if recipe.smooth_quant:
        model, _ = smooth(model, calibration.images, recipe.smooth_quant)
    if recipe.rounding:
        model = rounded(model, name, recipe, calibration, backend)
    if correction:
        model = corrected(model, name, recipe, calibration, backend, correction)
    with tempfile.TemporaryDirectory() as workdir:
        save_trained(model, fp32.arch, Path(workdir) / "trained")
        export_fp32(Path(workdir) / "trained", Path(workdir) / "fp32", data)
        yield read_fp32(Path(workdir) / "fp32")
