"""The recovery steps that transform the FP32 model before any backend quantizes it, in the order they run:
cross-layer equalization (`static.equalize`), then learned rounding (`static.rounding`), which rounds the
equalized weights. Bias correction needs the quantized model, so each backend carries it out itself.
"""

import contextlib
import copy
import tempfile
from pathlib import Path

import typer

from pipeline.backends.adaround import Grid, adaround
from pipeline.backends.equalize import equalize
from pipeline.backends.interface import Backend, Calibration
from pipeline.backends.recipes import StaticRecipe
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
    low, high = backend.weight_range(recipe)
    model, learned = adaround(
        model, calibration.images, Grid(low, high), recipe.adaround_iterations, recipe.skip_layers
    )
    if not learned:
        raise PipelineError(
            f"static.rounding: {name} has no Conv2d or Linear module to round (an exported graph has none); set it "
            "to nearest"
        )
    return model


@contextlib.contextmanager
def steps_applied(fp32: Fp32Model, recipe: StaticRecipe, data: DataInfo, calibration: Calibration, backend: Backend):
    """The FP32 model as the recipe's transforms leave it, in a temporary model folder with its ONNX file (which the
    runtimes' quantizers read), for a conversion to quantize; the model itself where the recipe asks for none."""
    if not (recipe.equalize or recipe.rounding):
        yield fp32
        return
    name = type(fp32.module).__name__
    model = equalized(copy.deepcopy(fp32.module), name) if recipe.equalize else fp32.module
    if recipe.rounding:
        model = rounded(model, name, recipe, calibration, backend)
    with tempfile.TemporaryDirectory() as workdir:
        save_trained(model, fp32.arch, Path(workdir) / "trained")
        export_fp32(Path(workdir) / "trained", Path(workdir) / "fp32", data)
        yield read_fp32(Path(workdir) / "fp32")
