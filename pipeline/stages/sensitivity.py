"""Stage `sensitivity`: which layer costs accuracy when it is quantized.

    python -m pipeline sensitivity

For each quantizable layer, with the static recipe of params.yaml and its backend: the accuracy drop (points, test
set) when only that layer is int8 and when every layer but that one is int8, and (eager backend) the SQNR of its
weights and of its output activations in the full int8 model against FP32. Rows are sorted, most sensitive
first; `static.skip_layers` takes these names. The search behind `static.max_accuracy_drop` is
`pipeline.backends.mixed_precision.fewest_float_layers`.
"""

from pathlib import Path

import torch
import typer
from tqdm import tqdm

from pipeline.backends.interface import Calibration, Conversion
from pipeline.backends.mixed_precision import points
from pipeline.backends.registry import backend_named, conversion_recipe
from pipeline.data.prepared import load_split
from pipeline.formats.fp32 import read_fp32
from pipeline.models.architectures import accuracy
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, PLOTS_DIR, PREPARED_DIR
from pipeline.safe_io import save_json

SENSITIVITY_FILE = PLOTS_DIR / "sensitivity.json"
ACTIVATION_IMAGES = 1000  # enough for a stable SQNR, few enough to stay fast


def layer_sensitivity(recipe: Conversion, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per quantizable layer, most sensitive first (largest drop when only it is int8)."""
    baseline = accuracy(recipe.model, images, labels)
    names = recipe.layers()
    noise = recipe.noise(names, images[:ACTIVATION_IMAGES])
    rows = [
        {
            "layer": name,
            "drop_only_this_int8": points(baseline, accuracy(recipe.only_int8(name), images, labels)),
            "drop_all_but_this_int8": points(baseline, accuracy(recipe.with_float([name]), images, labels)),
            **noise.get(name, {}),
        }
        for name in tqdm(names, desc="layers", leave=False, disable=None)
    ]
    return sorted(rows, key=lambda row: row["drop_only_this_int8"], reverse=True)


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding calib.pt and test.pt"),
    out: Path = typer.Option(SENSITIVITY_FILE, "--out", help="per-layer sensitivity (JSON)"),
) -> None:
    """Rank the layers by the accuracy they lose in int8."""
    params = load_params(params_file)
    fp32 = read_fp32(model_file)
    calibration = Calibration(load_split(data_dir / "calib.pt")[0], params.calibration.batches)
    images, labels = load_split(data_dir / "test.pt")
    # The recipe as params.yaml asks it: a runtime's backend ranks layers through PyTorch's eager modules.
    conversion = backend_named(params.quantize.backend).conversion(fp32.module, conversion_recipe(params), calibration)
    rows = layer_sensitivity(conversion, images, labels)
    save_json(rows, out)
    for row in rows:
        typer.echo("  ".join(f"{key} {value}" for key, value in row.items()))
