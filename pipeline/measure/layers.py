"""Inside a static int8 model (torch.ao's eager modules), layer by layer, every number recomputed from scratch.

For each quantized layer: the FP32 weight range and PyTorch's weight scale(s), zero point(s) and int8 values
beside the same numbers from `pipeline.affine`; and the output range seen on the calibration images with its
scale and zero point. Activations are recomputed for the minmax and moving-average observers, whose rules are
arithmetic; the histogram observer searches for a range instead, so its activations are reported, not recomputed.
"""

import torch
from torch import nn

from pipeline.affine import moving_average, qparams, quantize
from pipeline.backends.eager.modules import (
    activation_quant_max,
    float_twin,
    float_weight,
    quantize_static,
    recipe_qconfig,
    use_engine,
)
from pipeline.backends.interface import Calibration, torch_weight_range
from pipeline.backends.recipes import StaticRecipe
from pipeline.data.prepared import in_parts

HISTOGRAM_BINS = 40
DIFFERENCES = (
    "weight_scale_diff",
    "weight_zero_point_diff",
    "weight_int8_diff",
    "activation_scale_diff",
    "activation_zero_point_diff",
)


def recompute(fp32: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> tuple[list, list, dict]:
    """Rows per quantized layer (PyTorch's numbers beside the recomputed ones), weight histograms (FP32 and int8), and
    the largest difference of each kind, with the model input's quantization (range, scale and zero point)."""
    use_engine(recipe.engine)
    images, batches = calibration.images, calibration.batches
    int8 = quantize_static(fp32, recipe_qconfig(recipe), images, batches, recipe.fused)
    fused = float_twin(fp32, recipe.fused)
    layers = quantized_layers(int8)
    fused_modules = dict(fused.named_modules())
    observer = recipe.observer
    ranges = {
        name: observed_range(per_batch, observer, observer_calls(fused_modules[name]))
        for name, per_batch in batch_ranges(fused, ["quant", *layers], images, batches).items()
    }
    q_max = activation_quant_max(recipe.engine)
    arithmetic = observer in ("minmax", "moving_average_minmax")  # the histogram observer searches; not recomputed
    symmetric = recipe.symmetric_activations
    model_input = activation_row(ranges["quant"], int8.quant, q_max, arithmetic, symmetric)
    rows, histograms = [], []
    for name, module in layers.items():
        weight = float_weight(fused_modules[name])
        rows.append(
            {
                **weight_row(name, weight, module.weight(), recipe.bits()),
                **activation_row(ranges[name], module, q_max, arithmetic, symmetric),
            }
        )
        histograms += histogram_rows(name, weight, module.weight())
    checked = [model_input, *rows]
    summary = {
        key: max(row[key] for row in checked if key in row) for key in DIFFERENCES if any(key in row for row in checked)
    }
    return (
        rows,
        histograms,
        {"layers": len(layers), "activations_recomputed": arithmetic, **summary, "input": model_input},
    )


def quantized_layers(int8: nn.Module) -> dict[str, nn.Module]:
    """Modules holding int8 weights (quantized Linear and Conv, fused or not), by name."""
    return {name: module for name, module in int8.named_modules() if callable(getattr(module, "weight", None))}


@torch.no_grad()
def batch_ranges(model: nn.Module, names: list[str], images: torch.Tensor, batches: int) -> dict[str, list[tuple]]:
    """Min and max of each named module's output, per calibration batch, batched as the static stage does."""
    ranges, modules = {name: [] for name in names}, dict(model.named_modules())

    def record(name):
        def hook(_module, _inputs, output):
            ranges[name].append((output.min().item(), output.max().item()))

        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    for batch in in_parts(images, batches):
        model(batch)
    for handle in handles:
        handle.remove()
    return ranges


def observer_calls(module: nn.Module) -> int:
    """How often eager-mode calibration runs a module's output observer per batch.

    torch.ao's fused modules (LinearReLU, ConvReLU2d, ...) are nn.Sequential, and `prepare` adds the observer as
    a child: Sequential.forward runs it as its last element, then the observer's forward hook runs it again.
    Min/max and histograms do not change when a batch is seen twice; a moving average moves twice as far.
    """
    return 2 if isinstance(module, torch.ao.nn.intrinsic._FusedModule) else 1


def observed_range(per_batch: list[tuple], observer: str, calls: int) -> tuple[float, float]:
    """The range an observer ends with: overall min and max, or their moving averages."""
    lows, highs = [low for low, _ in per_batch], [high for _, high in per_batch]
    if observer == "moving_average_minmax":
        return moving_average(lows, calls), moving_average(highs, calls)
    return min(lows), max(highs)


def weight_row(name: str, weight: torch.Tensor, quantized: torch.Tensor, bits: int) -> dict:
    per_channel = quantized.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
    low, high = (
        (weight.flatten(1).min(1).values, weight.flatten(1).max(1).values)
        if per_channel
        else (weight.min(), weight.max())
    )
    q_min, q_max = torch_weight_range(bits)
    scale, zero_point = qparams(low, high, q_min, q_max, symmetric=True)
    torch_scale = quantized.q_per_channel_scales() if per_channel else torch.tensor(quantized.q_scale())
    torch_zero = quantized.q_per_channel_zero_points() if per_channel else torch.tensor(quantized.q_zero_point())
    values = quantize(weight, scale, zero_point, q_min, q_max)
    return {
        "layer": name,
        "weight_min": weight.min().item(),
        "weight_max": weight.max().item(),
        "weight_scale": torch_scale.max().item(),
        "weight_scale_diff": (scale.double() - torch_scale.double()).abs().max().item(),
        "weight_zero_point_diff": (zero_point - torch_zero).abs().max().item(),
        "weight_int8_diff": (values - quantized.int_repr().long()).abs().max().item(),
    }


def activation_row(
    observed: tuple[float, float], module: nn.Module, q_max: int, recompute: bool, symmetric: bool
) -> dict:
    row = {
        "activation_min": observed[0],
        "activation_max": observed[1],
        "activation_scale": float(module.scale),
        "activation_zero_point": int(module.zero_point),
    }
    if recompute:
        scale, zero_point = qparams(torch.tensor(observed[0]), torch.tensor(observed[1]), 0, q_max, symmetric)
        row["activation_scale_diff"] = abs(scale.item() - row["activation_scale"])
        row["activation_zero_point_diff"] = abs(zero_point.item() - row["activation_zero_point"])
    return row


def histogram_rows(name: str, weight: torch.Tensor, quantized: torch.Tensor) -> list[dict]:
    low, high = weight.min().item(), weight.max().item()
    fp32 = torch.histc(weight, HISTOGRAM_BINS, low, high)
    int8 = torch.histc(quantized.dequantize(), HISTOGRAM_BINS, low, high)
    width = (high - low) / HISTOGRAM_BINS
    return [
        {"layer": name, "weight": low + (i + 0.5) * width, "fp32": int(fp32[i]), "int8": int(int8[i])}
        for i in range(HISTOGRAM_BINS)
    ]
