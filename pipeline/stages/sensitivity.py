"""Stage `sensitivity`: which layer, and which of a runtime's op types, costs accuracy when it is quantized.

    python -m pipeline sensitivity

The rankings are `pipeline.measure.sensitivity`'s, with the static recipe of params.yaml and its backend. Writes
reports/plots/sensitivity.json (a row per layer, most sensitive first: `static.skip_layers` takes these names; the
search behind `static.max_accuracy_drop` is `pipeline.backends.mixed_precision`), reports/plots/op_types.json (a
row per op type the static variant's runtime quantizer holds in int8; empty for PyTorch's backends) and
reports/plots/steps.json (a row per recovery step the static variant took; empty where it took none).
"""

from pathlib import Path

import typer

from pipeline.backends.interface import Calibration
from pipeline.backends.registry import backend_named, conversion_recipe
from pipeline.data.prepared import load_split, read_info, test_subset
from pipeline.formats.deployables import read_runtime_settings
from pipeline.formats.fp32 import read_fp32, require_kind
from pipeline.measure.sensitivity import StaticVariant, layer_sensitivity, op_type_sensitivity, step_sensitivity
from pipeline.measure.variants import recipe_of
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import (
    FP32_MODEL,
    INT8_MODELS,
    OP_TYPES_PLOT,
    PLOTS_DIR,
    PREPARED_DIR,
    SENSITIVITY_PLOT,
    STEPS_PLOT,
)
from pipeline.safe_io import save_jsons

SENSITIVITY_FILE = PLOTS_DIR / SENSITIVITY_PLOT
OP_TYPES_FILE = PLOTS_DIR / OP_TYPES_PLOT
STEPS_FILE = PLOTS_DIR / STEPS_PLOT


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    static_folder: Path = typer.Option(INT8_MODELS["static"], "--static", help="the static int8 variant's folder"),
    out: Path = typer.Option(SENSITIVITY_FILE, "--out", help="per-layer sensitivity (JSON)"),
    op_types_out: Path = typer.Option(OP_TYPES_FILE, "--op-types-out", help="per-op-type sensitivity (JSON)"),
    steps_out: Path = typer.Option(STEPS_FILE, "--steps-out", help="what each recovery step wins (JSON)"),
) -> None:
    """Rank the layers, and a runtime's op types, by the accuracy they lose in int8, and the recovery steps by what
    they win."""
    params = load_params(params_file)
    static = read_runtime_settings(static_folder)  # read before any work: op types are ranked with its recipe
    require_kind(static, "int8", static_folder)
    fp32 = read_fp32(model_file)
    calibration = Calibration(load_split(data_dir, "calib")[0], params.calibration.batches)
    images, labels = test_subset(*load_split(data_dir, "test"), params.static.sensitivity_test_images, params.seed)
    # The recipe as params.yaml asks it: a runtime's backend ranks layers through PyTorch's eager modules.
    conversion = backend_named(params.quantize.backend).conversion(fp32.module, conversion_recipe(params), calibration)
    rows = layer_sensitivity(conversion, images, labels)
    variant = StaticVariant(
        static_folder, recipe_of(static, static_folder), fp32, calibration, read_info(data_dir), images, labels
    )
    op_types, steps = op_type_sensitivity(variant), step_sensitivity(variant)
    save_jsons({out: rows, op_types_out: op_types, steps_out: steps})
    for row in rows + op_types + steps:
        typer.echo("  ".join(f"{key} {value}" for key, value in row.items()))
