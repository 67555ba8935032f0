"""The project's own bias correction (`static.bias_correction` on eager and onnxruntime, whose quantizers have none):
a transform of the FP32 model before the backend quantizes it.

int8 weights shift each output channel's mean: the rounding errors of a channel's weights do not cancel over its
inputs. Given the integers the backend's own quantizer will make of each weight (its grid, `Backend.weight_range`,
per output channel), the shift on the calibration images is measured and taken off the layer's bias beforehand
(Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", section 4.2, with the
input statistics measured, as their empirical variant):

- `fast`: shift = mean over the images of (W_int8 - W) x, with x the FP32 model's input to the layer: every layer
  on its own, from one pass that averages each layer's inputs (the shift is linear in them; NNCF's
  FastBiasCorrection measures on FP32 inputs alike);
- `full`: shift = mean of W_int8 x' minus mean of W x, layer by layer in the order the model holds them (the order
  they run in, in the CNNs here and torchvision's), with x' what the layers before it give with their int8 weights
  and corrected biases: each layer also takes off the shift the layers before it leave (NNCF's BiasCorrection
  alike).

Only weights are rounded while measuring; activations stay FP32. A layer that a batch norm follows has its shift
added to the batch norm's running mean instead, the same after folding; a layer without a bias gets one.
"""

import copy

import torch
import typer
from torch import nn

from pipeline.backends.adaround import Grid
from pipeline.backends.layer_graph import apply, hooked_pass, layer_inputs, norms_after, weight_layers
from pipeline.data.prepared import AnyImages


def channel_means(layer: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    """Each output channel's mean over images and positions (a Conv2d's channels come second, a Linear's last)."""
    if isinstance(layer, nn.Conv2d):
        return outputs.transpose(0, 1).flatten(1).mean(1)
    return outputs.flatten(0, -2).mean(0)


@torch.no_grad()
def shift(layer: nn.Module, grid: Grid, inputs: torch.Tensor, fp32_inputs: torch.Tensor) -> torch.Tensor:
    """The mean output of the layer with int8 weights on `inputs`, less the FP32 layer's on `fp32_inputs`."""
    rounded = grid.nearest(layer.weight) * grid.scales(layer.weight)
    int8_means = channel_means(layer, apply(layer, inputs, rounded))
    return int8_means - channel_means(layer, apply(layer, fp32_inputs, layer.weight))


@torch.no_grad()
def mean_inputs(model: nn.Module, names: list[str], images: AnyImages) -> dict[str, torch.Tensor]:
    """Each named module's input averaged over the images (one pass), as a batch of one; modules never called as
    modules are left out."""
    sums, counts = {}, {}

    def record(name, inputs, output):
        sums[name] = sums.get(name, 0) + inputs.sum(0, keepdim=True)
        counts[name] = counts.get(name, 0) + len(inputs)

    hooked_pass(model, names, images, record)
    return {name: sums[name] / counts[name] for name in sums}


@torch.no_grad()
def take_off(model: nn.Module, name: str, norm: str | None, amount: torch.Tensor) -> None:
    """Take `amount` off the output of the layer `name`: into its batch norm's running mean, or its bias."""
    if norm is not None:
        model.get_submodule(norm).running_mean.add_(amount)
        return
    layer = model.get_submodule(name)
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(amount))
    layer.bias.sub_(amount)


@torch.no_grad()
def correct_biases(
    model: nn.Module, images: AnyImages, grid: Grid, mode: str, skip_layers=()
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of the model with each quantized layer's bias corrected (`mode`: fast or full), and the shift taken
    off each layer."""
    fp32, model = model.eval(), copy.deepcopy(model).eval()
    norms = norms_after(model, "static.bias_correction")
    # full: a copy whose corrected layers hold their int8 weights, for the inputs the next layers will have
    simulated = copy.deepcopy(model) if mode == "full" else fp32
    names = weight_layers(model, skip_layers)
    # fast: each layer's shift is linear in its inputs, so their mean over the images, from one pass, gives it
    means = mean_inputs(fp32, names, images) if mode == "fast" else {}
    shifts = {}
    for name in names:
        fp32_inputs = means.get(name) if mode == "fast" else layer_inputs(fp32, name, images)
        if fp32_inputs is None:
            continue
        layer = model.get_submodule(name)
        inputs = layer_inputs(simulated, name, images) if mode == "full" else fp32_inputs
        shifts[name] = shift(layer, grid, inputs, fp32_inputs)
        take_off(model, name, norms.get(name), shifts[name])
        if mode == "full":
            take_off(simulated, name, norms.get(name), shifts[name])
            copied = simulated.get_submodule(name)
            copied.weight.copy_(grid.nearest(copied.weight) * grid.scales(copied.weight))
    largest = max((float(value.abs().max()) for value in shifts.values()), default=0.0)
    typer.echo(
        f"static.bias_correction: {mode}, {len(shifts)} layers corrected (largest shift {largest:.3g})", err=True
    )
    return model, shifts
