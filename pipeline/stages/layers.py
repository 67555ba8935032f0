"""Stage `layers`: inside the static int8 model (torch.ao), layer by layer, every number recomputed from scratch.

    python -m pipeline layers

Writes reports/plots/layers.json (per quantized layer, PyTorch's numbers beside those `pipeline.measure.layers`
recomputes), the weight histograms, and reports/affine.json (the largest difference of each kind, and the model
input's quantization).
"""

from dataclasses import replace
from pathlib import Path

import typer

from pipeline.backends.eager.modules import has_eager_twin
from pipeline.backends.interface import Calibration
from pipeline.backends.registry import backend_of, conversion_recipe, transform_steps
from pipeline.backends.steps import steps_applied
from pipeline.data.prepared import load_split, read_info
from pipeline.formats.fp32 import read_fp32
from pipeline.measure.layers import DIFFERENCES, recompute
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, LAYERS_PLOT, PLOTS_DIR, PREPARED_DIR, WEIGHTS_PLOT
from pipeline.safe_io import save_jsons

LAYERS_FILE = PLOTS_DIR / LAYERS_PLOT
HISTOGRAMS_FILE = PLOTS_DIR / WEIGHTS_PLOT
AFFINE_FILE = Path("reports/affine.json")


def write_not_applicable(reason: str) -> None:
    """Outputs that say the check does not apply, so the pipeline and its report go on."""
    save_jsons({LAYERS_FILE: [], HISTOGRAMS_FILE: [], AFFINE_FILE: {"layers": 0, "not_applicable": reason}})
    typer.echo(f"from-scratch check not applicable: {reason}")


def command(
    params_file: ParamsOption = PARAMS_FILE,
    fp32_file: Path = typer.Option(FP32_MODEL, "--fp32", help="the FP32 checkpoint"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
) -> None:
    """Recompute every layer's scales, zero points and int8 weights from scratch, and compare with PyTorch's."""
    params = load_params(params_file)
    fp32 = read_fp32(fp32_file)
    if not has_eager_twin(fp32.module):
        write_not_applicable(f"{type(fp32.module).__name__} has no eager int8 twin whose modules hold the numbers")
        return
    # The static recipe of params.yaml through torch.ao, whichever backend made models/int8_static: its modules
    # hold every scale and int8 weight as a tensor to compare with. The FP32 model is first transformed as the
    # recipe's steps do (equalization, learned rounding), so that the check covers the weights they leave: the
    # learned integers are those torch.ao's own rounding recomputes (per channel, as learned rounding needs).
    recipe = replace(conversion_recipe(params, backend="eager"), **transform_steps(params))
    recipe = replace(recipe, per_channel=True) if recipe.rounding else recipe
    calibration = Calibration(load_split(data_dir, "calib")[0], params.calibration.batches)
    with steps_applied(fp32, recipe, read_info(data_dir), calibration, backend_of(recipe)) as model:
        rows, histograms, summary = recompute(model.module, recipe, calibration)
    save_jsons({LAYERS_FILE: rows, HISTOGRAMS_FILE: histograms, AFFINE_FILE: summary})
    for key, value in summary.items():
        if key in DIFFERENCES:
            typer.echo(f"max {key.replace('_', ' ')} vs PyTorch: {value}")
