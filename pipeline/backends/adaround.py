"""Learned rounding (`static.rounding: adaround`): a transform of the FP32 model before a backend quantizes it.

Rounding every weight to its nearest integer makes each weight's own error smallest, not the layer's output error,
and at 4 bits the two differ enough to ruin a model. AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization") learns, layer by layer, whether each weight rounds down or up: a continuous
variable per weight, pushed to 0 or 1 by a regularizer whose sharpness is annealed, so that the layer's output on
the calibration images stays closest to FP32's. Each layer's output is matched against the FP32 model's on its
FP32 inputs, taking as input what the layers rounded before it give (the paper's asymmetric reconstruction), so
that each layer also makes up for the error of those before it; the output before the activation (the paper's
simplest form).

Each weight is then set to its learned integer times its scale, which the backend's own quantizer maps back to
the same integer: the scale of each output channel is max |w| over half the width of the backend's integer range
(`Backend.weight_range`); the largest weight of each channel keeps its value (so the backend finds the same
scale) and rounds as the backend rounds it; every other weight stays within that magnitude. Batch-norm folding
scales a channel's weights and its scale alike, so the integers survive it (per-channel weights only).
"""

import copy
import time
from dataclasses import dataclass

import torch
import typer
from torch import nn

from pipeline.affine import qparams, quantize
from pipeline.backends.layer_graph import apply, layer_inputs, weight_layers
from pipeline.data.prepared import AnyImages

STRETCH = (-0.1, 1.1)  # the rectified sigmoid's range before clipping to [0, 1] (the paper's gamma and zeta)
REGULARIZER = 0.01  # the rounding term's weight against the output error
SHARPNESS = (20.0, 2.0)  # the regularizer's exponent, annealed from the first to the second
WARM_UP = 0.2  # share of the steps that learn from the output error alone
BATCH = 32  # calibration images a step
LEARNING_RATE = 1e-2  # 10x AIMET's: on a layer at 4 bits, 500 steps won as much as 3000 at 1e-3 (docs/recovery.md)


@dataclass(frozen=True)
class Grid:
    """The integers a backend's symmetric weights take (`Backend.weight_range`)."""

    low: int
    high: int

    def scales(self, weight: torch.Tensor) -> torch.Tensor:
        """One scale per output channel, shaped to divide the weight: max |w| over half the range's width, as
        torch.ao's observers and ONNX Runtime compute it."""
        rows = weight.detach().flatten(1)
        scale, _ = qparams(rows.amin(1), rows.amax(1), self.low, self.high, symmetric=True)
        return scale.view(-1, *(1,) * (weight.dim() - 1))

    def nearest(self, weight: torch.Tensor) -> torch.Tensor:
        """The integers the backend's own rounding gives (PyTorch's kernels: times the scale's inverse)."""
        scale = self.scales(weight).flatten()
        return quantize(weight.detach(), scale, torch.zeros_like(scale, dtype=torch.int64), self.low, self.high).float()


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    low, high = STRETCH
    return torch.clamp(torch.sigmoid(v) * (high - low) + low, 0, 1)


def initial_v(rest: torch.Tensor) -> torch.Tensor:
    """The variable whose rectified sigmoid is `rest` (the fraction above the integer below): AdaRound starts from
    the FP32 weight itself."""
    low, high = STRETCH
    return -torch.log((high - low) / (rest - low) - 1)


def largest_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """A mask of each output channel's largest |w| (one element per channel): the element that sets its scale."""
    flat = weight.flatten(1).abs()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.arange(len(flat)), flat.argmax(1)] = True
    return mask.view_as(weight)


def learned_integers(
    layer: nn.Module, fp32_inputs: torch.Tensor, inputs: torch.Tensor, grid: Grid, steps: int, seed: int
) -> torch.Tensor:
    """The integer of each weight of `layer`, learned so that the layer on `inputs` (what the rounded layers before
    it give) comes closest to the FP32 layer on `fp32_inputs`."""
    weight = layer.weight.detach()
    scale = grid.scales(weight)
    below = torch.floor(weight / scale)
    v = nn.Parameter(initial_v(weight / scale - below))
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    warm = int(steps * WARM_UP)
    for step in range(steps):
        rows = torch.randint(len(inputs), (min(BATCH, len(inputs)),), generator=generator)
        with torch.no_grad():
            target = apply(layer, fp32_inputs[rows], weight)
        soft = scale * torch.clamp(below + rectified_sigmoid(v), grid.low, grid.high)
        loss = (apply(layer, inputs[rows], soft) - target).pow(2).sum(1).mean()
        if step >= warm:
            progress = (step - warm) / max(steps - warm, 1)
            sharpness = SHARPNESS[0] + (SHARPNESS[1] - SHARPNESS[0]) * progress
            loss = loss + REGULARIZER * (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(sharpness)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learned = below + (v.detach() >= 0)
    # no weight but the largest may reach past the largest's magnitude: the backend would find another scale
    within = torch.floor(torch.tensor((grid.high - grid.low) / 2))
    learned = torch.clamp(learned, max(grid.low, -within), min(grid.high, within))
    return torch.where(largest_per_channel(weight), grid.nearest(weight), learned)


@torch.no_grad()
def keep_largest(rounded: nn.Module, fp32: nn.Module, names) -> None:
    """Each channel's largest weight back to its FP32 value, which the backend finds the same scale from (and rounds
    as the rounded model did)."""
    for name in names:
        weight, original = rounded.get_submodule(name).weight, fp32.get_submodule(name).weight
        weight.copy_(torch.where(largest_per_channel(original), original, weight))


def adaround(
    model: nn.Module, images: AnyImages, grid: Grid, steps: int, skip_layers=(), seed: int = 0
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of the model with every roundable layer's weights rounded as learned, in the order the model holds the
    layers (the order they run in, in the CNNs here and torchvision's), and the integers each layer's weights now
    land on. While learning, each rounded layer holds its integers times their scales, as the backend will compute
    it, so that each next layer learns against the inputs it will have."""
    fp32, model = model.eval(), copy.deepcopy(model).eval()
    learned, started = {}, time.perf_counter()
    for number, name in enumerate(weight_layers(model, skip_layers)):
        inputs = layer_inputs(model, name, images)
        if inputs is None:
            continue
        layer = model.get_submodule(name)
        with torch.enable_grad():
            integers = learned_integers(layer, layer_inputs(fp32, name, images), inputs, grid, steps, seed + number)
        with torch.no_grad():
            layer.weight.copy_(integers * grid.scales(layer.weight))
        learned[name] = integers
    keep_largest(model, fp32, learned)
    flipped = sum(int((learned[name] != grid.nearest(fp32.get_submodule(name).weight)).sum()) for name in learned)
    total = sum(integers.numel() for integers in learned.values())
    typer.echo(
        f"static.rounding: adaround rounded {len(learned)} layers, {flipped / max(total, 1):.1%} of their weights "
        f"the other way than nearest, in {time.perf_counter() - started:.0f} s",
        err=True,
    )
    return model, learned
