"""Stage `sensitivity`: which layer costs accuracy when it is quantized.

    python -m pipeline sensitivity

For each quantizable layer, with the static recipe of params.yaml and its backend: the accuracy drop (points, test
set) when only that layer is int8 and when every layer but that one is int8, and (eager backend) the SQNR of its
weights and of its output activations in the full int8 model against FP32. Rows are sorted, most sensitive
first; `static.skip_layers` takes these names. The search behind `static.max_accuracy_drop` is
`pipeline.mixed_precision.fewest_float_layers`.
"""

from pathlib import Path

import torch
import typer
from torch import nn
from tqdm import tqdm

from pipeline.artifacts import save_json
from pipeline.checkpoints import load_fp32
from pipeline.data import load_split
from pipeline.fidelity import sqnr_db
from pipeline.mixed_precision import EagerRecipe, points, static_recipe
from pipeline.models import accuracy
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, PLOTS_DIR, PREPARED_DIR
from pipeline.quantize import float_twin, float_weight, use_engine

SENSITIVITY_FILE = PLOTS_DIR / "sensitivity.json"
ACTIVATION_IMAGES = 1000  # enough for a stable SQNR, few enough to stay fast


@torch.no_grad()
def layer_outputs(model: nn.Module, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's output (dequantized if int8) for one batch of images."""
    outputs, modules = {}, dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out.dequantize() if out.is_quantized else out)
        )
        for name in names
    ]
    model(images)
    for hook in hooks:
        hook.remove()
    return outputs


def layer_sensitivity(recipe, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per quantizable layer, most sensitive first (largest drop when only it is int8)."""
    baseline = accuracy(recipe.model, images, labels)
    names = recipe.layers()
    noise = signal_to_noise(recipe, names, images[:ACTIVATION_IMAGES]) if isinstance(recipe, EagerRecipe) else {}
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


def signal_to_noise(recipe: EagerRecipe, names: list[str], images: torch.Tensor) -> dict[str, dict]:
    """The SQNR of each layer's weights and output in the full int8 model against FP32. Eager modules hold both;
    a pt2e graph keeps no modules to hook, so its rows have the accuracy drops alone."""
    full, reference = recipe.with_float([]), float_twin(recipe.model, recipe.fused)
    fp32_out, int8_out = (layer_outputs(model, names, images) for model in (reference, full))
    modules, int8_modules = dict(reference.named_modules()), dict(full.named_modules())
    return {
        name: {
            "weight_sqnr_db": sqnr_db(float_weight(modules[name]), int8_modules[name].weight().dequantize()),
            "activation_sqnr_db": sqnr_db(fp32_out[name], int8_out[name]),
        }
        for name in names
    }


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding calib.pt and test.pt"),
    out: Path = typer.Option(SENSITIVITY_FILE, "--out", help="per-layer sensitivity (JSON)"),
) -> None:
    """Rank the layers by the accuracy they lose in int8."""
    params = load_params(params_file)
    model, _ = load_fp32(model_file)
    calibration, _ = load_split(data_dir / "calib.pt")
    images, labels = load_split(data_dir / "test.pt")
    use_engine(params.engine)
    rows = layer_sensitivity(static_recipe(model, params, calibration), images, labels)
    save_json(rows, out)
    for row in rows:
        typer.echo("  ".join(f"{key} {value}" for key, value in row.items()))
