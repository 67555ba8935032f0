"""SmoothQuant (`static.smooth_quant: alpha`): a transform of the FP32 model before any backend quantizes it.

The activations a transformer's Linear layers take have a few channels far larger than the rest, which one int8
scale for the whole tensor rounds coarsely, while the weights are easy to quantize. SmoothQuant (Xiao et al. 2023,
"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models") divides each input
channel j of the activation by s_j and multiplies the weights' input channel j by s_j, leaving the product as it
was, with s_j = max |X_j|^alpha / max |W_j|^(1 - alpha): alpha of the activation's range moves into the weights.
Where the activation is a LayerNorm's output, the division folds into the LayerNorm's weight and bias, so the model
computes what it did with no op added. Found from the traced graph: each LayerNorm whose output only Linear layers
or nn.MultiheadAttention's input projection take (torchvision's ViT: ln_1 before attention, ln_2 before the MLP).
"""

import copy

import torch
import typer
from torch import nn

from pipeline.backends.layer_graph import layer_outputs_max, traced
from pipeline.data.prepared import AnyImages
from pipeline.errors import PipelineError


def consumer_weight(module: nn.Module) -> torch.Tensor:
    """The weight whose input channels take the LayerNorm's output (a Linear's, or attention's input projection)."""
    return module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else module.weight


def takes_it_whole(node: torch.fx.Node, source: torch.fx.Node, modules: dict) -> bool:
    """Whether a user of the LayerNorm's output is a Linear on it, or attention with it as query, key and value
    (one input projection for all three)."""
    if node.op != "call_module":
        return False
    module = modules[node.target]
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim and list(node.args[:3]) == [source] * 3
    )


def smoothable(model: nn.Module) -> dict[str, list[str]]:
    """Each LayerNorm whose output only Linear layers or attention's input projections take, and those takers."""
    modules, found = dict(model.named_modules()), {}
    for node in traced(model, "static.smooth_quant").nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.LayerNorm) and node.users:
            if all(takes_it_whole(user, node, modules) for user in node.users):
                found[node.target] = [user.target for user in node.users]
    return found


@torch.no_grad()
def smooth(model: nn.Module, images: AnyImages, alpha: float) -> tuple[nn.Module, dict[str, list[str]]]:
    """A copy of the model with each smoothable LayerNorm's output channels divided by their SmoothQuant scales,
    and its takers' weights multiplied by them, and what was smoothed."""
    model = copy.deepcopy(model).eval()
    found = smoothable(model)
    if not found:
        raise PipelineError(
            f"static.smooth_quant: {type(model).__name__} has no LayerNorm whose output only Linear layers take; "
            "set it to null"
        )
    activation = layer_outputs_max(model, list(found), images)
    for norm_name, takers in found.items():
        weights = [consumer_weight(model.get_submodule(name)) for name in takers]
        weight_max = torch.stack([weight.abs().amax(0) for weight in weights]).amax(0)
        scale = (activation[norm_name].pow(alpha) / weight_max.pow(1 - alpha)).clamp(min=1e-5)
        norm = model.get_submodule(norm_name)
        norm.weight.div_(scale)
        norm.bias.div_(scale)
        for weight in weights:
            weight.mul_(scale)
    typer.echo(f"static.smooth_quant: alpha {alpha}, {len(found)} LayerNorms smoothed into their layers", err=True)
    return model, found
