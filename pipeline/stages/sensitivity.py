"""Stage `sensitivity`: which layer costs accuracy when it is quantized.

    python -m pipeline sensitivity

For each quantizable layer, with the static recipe of params.yaml and its backend: the accuracy drop (points, test
set) when only that layer is int8 and when every layer but that one is int8, and (eager backend) the SQNR of its
weights and of its output activations in the full int8 model against FP32. Rows are sorted, most sensitive
first; `static.skip_layers` takes these names. The search behind `static.max_accuracy_drop` is
`pipeline.backends.mixed_precision.fewest_float_layers`.

A runtime's quantizer works on op types as well as layers: for onnxruntime and openvino, each op type whose inputs
the static variant holds in int8 is kept in FP32 in turn (`onnxruntime.op_types`, `openvino.ignored_types`), the
static variant's own recipe converted again and scored on its runtime. The points each wins back, most first, go
to reports/plots/op_types.json (empty for PyTorch's backends, and for a model with one such type).
"""

from pathlib import Path

import torch
import typer
from tqdm import tqdm

from pipeline.backends.interface import Calibration, Conversion
from pipeline.backends.mixed_precision import points
from pipeline.backends.recipes import StaticRecipe
from pipeline.backends.registry import backend_named, backend_of, conversion_recipe
from pipeline.data.prepared import DataInfo, load_split, read_info
from pipeline.formats.fp32 import Fp32Model, read_fp32, require_kind
from pipeline.formats.variants import read_runtime_settings
from pipeline.measure.variants import accuracy_of, recipe_of, static_accuracy
from pipeline.models.architectures import accuracy
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PLOTS_DIR, PREPARED_DIR
from pipeline.safe_io import save_json

SENSITIVITY_FILE = PLOTS_DIR / "sensitivity.json"
OP_TYPES_FILE = PLOTS_DIR / "op_types.json"
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


def op_type_sensitivity(
    fp32: Fp32Model,
    static_folder: Path,
    recipe: StaticRecipe,
    calibration: Calibration,
    data: DataInfo,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> list[dict]:
    """One row per op type the static variant quantizes, most harmful first: the accuracy drop from FP32 with that
    type kept in FP32 by the quantizer's op-type option (`Backend.with_float_op_type`; all else as the variant,
    made with `recipe`), and the points that wins back."""
    backend = backend_of(recipe)
    quantized = backend.quantized_op_types(static_folder, recipe)
    if len(quantized) < 2:  # with its only type kept in FP32, a model is its FP32 self: nothing to rank
        return []
    reference = accuracy(fp32.module, images, labels)
    int8_drop = points(reference, accuracy_of(static_folder, images, labels))
    rows = []
    for op_type in tqdm(quantized, desc="op types", leave=False, disable=None):
        kept = backend.with_float_op_type(recipe, op_type)
        drop = points(reference, static_accuracy(backend, fp32, kept, calibration, data, images, labels))
        rows.append({"op_type": op_type, "drop_with_it_fp32": drop, "won_back": round(int8_drop - drop, 3)})
    return sorted(rows, key=lambda row: row["won_back"], reverse=True)


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding calib.pt and test.pt"),
    static_folder: Path = typer.Option(INT8_MODELS["static"], "--static", help="the static int8 variant's folder"),
    out: Path = typer.Option(SENSITIVITY_FILE, "--out", help="per-layer sensitivity (JSON)"),
    op_types_out: Path = typer.Option(OP_TYPES_FILE, "--op-types-out", help="per-op-type sensitivity (JSON)"),
) -> None:
    """Rank the layers, and a runtime's op types, by the accuracy they lose in int8."""
    params = load_params(params_file)
    static = read_runtime_settings(static_folder)  # read before any work: op types are ranked with its recipe
    require_kind(static, "int8", static_folder)
    fp32 = read_fp32(model_file)
    calibration = Calibration(load_split(data_dir / "calib.pt")[0], params.calibration.batches)
    images, labels = load_split(data_dir / "test.pt")
    # The recipe as params.yaml asks it: a runtime's backend ranks layers through PyTorch's eager modules.
    conversion = backend_named(params.quantize.backend).conversion(fp32.module, conversion_recipe(params), calibration)
    rows = layer_sensitivity(conversion, images, labels)
    op_types = op_type_sensitivity(
        fp32, static_folder, recipe_of(static, static_folder), calibration, read_info(data_dir), images, labels
    )
    save_json(rows, out)
    save_json(op_types, op_types_out)
    for row in rows + op_types:
        typer.echo("  ".join(f"{key} {value}" for key, value in row.items()))
