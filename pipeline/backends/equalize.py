"""Cross-layer equalization (`static.equalize`): a transform of the FP32 model before any backend quantizes it.

Per-tensor int8 gives a whole layer one scale, so a layer whose output channels have very different weight ranges
(common after batch-norm folding, in depthwise convolutions above all) rounds its small channels to a few levels.
Where a layer feeds the next through a ReLU only, scaling the first layer's output channel i by 1/s and the next
layer's input channel i by s computes the same function (ReLU(x / s) = ReLU(x) / s for s > 0); choosing
s = sqrt(r1 / r2), with r1 the range of channel i's weights in the first layer and r2 that of its inputs' weights
in the second, gives both the same range, sqrt(r1 r2) (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.1). Chains of pairs are equalized in turn until the scales settle.

Pairs are found from the model's traced graph (torch.fx): a Conv2d or Linear, optionally its BatchNorm (whose
scale and shift carry the first layer's part, so batch-norm stays where the backends fuse it), a ReLU, any
max- or average-pooling or dropout, then a Conv2d (ungrouped or depthwise) or Linear, each output used by the next
alone. Everything else is left as it is and reported. The function the model computes does not change.
"""

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.backends.layer_graph import LAYERS, NORMS, module_of, only_user, traced

# channel by channel, and commuting with a positive scale: what may stand between the ReLU and the second layer
PASSING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
RELUS = (torch.relu, torch.nn.functional.relu)
ROUNDS = 20  # passes over every pair; the scales of a chain settle within a few


@dataclass(frozen=True)
class Pair:
    first: str  # a Conv2d or Linear
    norm: str | None  # its BatchNorm, if any
    second: str  # the Conv2d or Linear its ReLU feeds


def is_relu(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    return (node.op == "call_function" and node.target in RELUS) or (node.op == "call_method" and node.target == "relu")


def is_depthwise(layer: nn.Module) -> bool:
    """A grouped convolution whose input channel i is filter i alone (`fits` admits no other grouping)."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1


def fits(first: nn.Module, second: nn.Module) -> bool:
    """Whether `second` takes `first`'s output channels one for one: ungrouped, or depthwise."""
    channels = first.out_channels if isinstance(first, nn.Conv2d) else first.out_features
    if isinstance(second, nn.Linear):
        return isinstance(first, nn.Linear) and second.in_features == channels
    if not isinstance(first, nn.Conv2d) or second.in_channels != channels:
        return False
    return second.groups in (1, channels) and (second.groups == 1 or second.out_channels == channels)


def find_pairs(model: nn.Module) -> tuple[list[Pair], list[str]]:
    """The pairs equalization can scale, and the Conv2d and Linear layers in none."""
    graph = traced(model, "static.equalize")
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        first = module_of(node, modules, LAYERS)
        if first is None:
            continue
        norm, step = None, only_user(node)
        if module_of(step, modules, NORMS) is not None:
            norm, step = step.target, only_user(step)
        if step is None or not is_relu(step, modules):
            continue
        step = only_user(step)
        while module_of(step, modules, PASSING) is not None:
            step = only_user(step)
        second = module_of(step, modules, LAYERS)
        if second is not None and fits(first, second):
            pairs.append(Pair(node.target, norm, step.target))
    paired = {name for pair in pairs for name in (pair.first, pair.second)}
    unpaired = [name for name, module in model.named_modules() if isinstance(module, LAYERS) and name not in paired]
    return pairs, unpaired


def output_ranges(first: nn.Module, norm: nn.Module | None) -> torch.Tensor:
    """Each output channel's weight range, max |w|, of the first layer as a backend sees it: batch-norm folded in."""
    ranges = first.weight.detach().flatten(1).abs().amax(1)
    if norm is not None:
        ranges = ranges * (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).abs()
    return ranges


def input_ranges(second: nn.Module) -> torch.Tensor:
    """Each input channel's weight range, max |w|, of the second layer."""
    weight = second.weight.detach()
    if is_depthwise(second):
        return weight.flatten(1).abs().amax(1)
    return weight.transpose(0, 1).flatten(1).abs().amax(1)


@torch.no_grad()
def equalize_pair(model: nn.Module, pair: Pair) -> float:
    """Scale one pair's shared channels to equal ranges; the largest relative change of a scale, for convergence."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    norm = model.get_submodule(pair.norm) if pair.norm else None
    r1, r2 = output_ranges(first, norm), input_ranges(second)
    scale = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
    shape = (-1,) + (1,) * (first.weight.dim() - 1)
    if norm is not None:  # the first layer's output channel i divided by s: its batch-norm's scale and shift
        norm.weight.div_(scale)
        norm.bias.div_(scale)
    else:
        first.weight.div_(scale.view(shape))
        if first.bias is not None:
            first.bias.div_(scale)
    if is_depthwise(second):
        second.weight.mul_(scale.view(-1, *(1,) * (second.weight.dim() - 1)))
    else:
        second.weight.mul_(scale.view(1, -1, *(1,) * (second.weight.dim() - 2)))
    return float((scale - 1).abs().max())


def equalize(model: nn.Module) -> tuple[nn.Module, list[Pair], list[str]]:
    """The model with every pair equalized (in place), the pairs, and the layers in none."""
    pairs, unpaired = find_pairs(model)
    for _ in range(ROUNDS):
        if max((equalize_pair(model, pair) for pair in pairs), default=0.0) < 1e-4:
            break
    return model, pairs, unpaired
