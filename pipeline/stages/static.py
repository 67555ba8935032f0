"""Stage `static`: post-training static int8, with layer fusion and calibration on the calibration subset.

python -m pipeline static
"""

import time
from dataclasses import replace
from pathlib import Path

import typer

from pipeline.backends.interface import Calibration
from pipeline.backends.mixed_precision import fewest_float_layers
from pipeline.backends.registry import planned
from pipeline.backends.steps import steps_applied
from pipeline.data.prepared import load_split, read_info
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import CONVERSION_FILE, FP32_MODEL, INT8_MODELS, PREPARED_DIR
from pipeline.safe_io import save_json


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to quantize"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    out: Path = typer.Option(INT8_MODELS["static"], "--out", help="folder for the int8 model"),
    seconds_file: Path = typer.Option(CONVERSION_FILE, "--seconds", help="JSON file for the seconds it took"),
) -> None:
    """Fuse, calibrate and convert the FP32 model to static int8."""
    params = load_params(params_file)
    backend, recipe = planned(params, "static")
    fp32 = read_fp32(model_file)
    images, labels = load_split(data_dir, "calib")
    batches = params.calibration.batches
    if batches > len(images):
        raise PipelineError(
            f"calibration.batches: {batches} batches cannot be made of {len(images)} calibration images"
        )
    calibration, data = Calibration(images, batches), read_info(data_dir)
    started = time.perf_counter()  # the method's cost: its steps, calibration and conversion, not loading files
    with steps_applied(fp32, recipe, data, calibration, backend) as model:
        if recipe.max_accuracy_drop is not None:
            conversion = backend.conversion(model.module, recipe, calibration)
            kept = fewest_float_layers(conversion, labels, list(recipe.skip_layers), recipe.max_accuracy_drop)
            typer.echo(f"kept in FP32 to lose at most {recipe.max_accuracy_drop} points: {kept or 'none'}")
            recipe = replace(recipe, skip_layers=tuple(kept))
        backend.static(model, recipe, calibration, out, data)
    seconds = time.perf_counter() - started
    save_json({"static": {"seconds": round(seconds, 1)}}, seconds_file)
    typer.echo(f"static int8 made in {seconds:.1f} s")
