"""The Conv2d and Linear layers of a PyTorch model as the recovery steps see them: which a backend quantizes, what
each is fed, what follows each in the traced graph, and each computed with other weights."""

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.data.prepared import AnyImages, in_batches
from pipeline.errors import PipelineError

LAYERS = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm2d, nn.BatchNorm1d)


def weight_layers(model: nn.Module, skip_layers=()) -> list[str]:
    """The Conv2d and Linear modules a backend quantizes, in the order the model holds them, but for those kept in
    FP32 and those nn.MultiheadAttention computes with its own weights (its output projection)."""
    attention = [name for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)]
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, LAYERS)
        and name not in skip_layers
        and not any(name.startswith(f"{owner}.") for owner in attention)
    ]


@torch.no_grad()
def layer_inputs(model: nn.Module, name: str, images: AnyImages) -> torch.Tensor | None:
    """What the module `name` takes on the images, batch by batch; None where it is never called as a module."""
    seen = []
    hook = model.get_submodule(name).register_forward_hook(lambda module, args, output: seen.append(args[0]))
    try:
        for batch in in_batches(images, description=f"inputs of {name}"):
            model(batch)
    finally:
        hook.remove()
    return torch.cat(seen) if seen else None


@torch.no_grad()
def hooked_pass(model: nn.Module, names: list[str], images: AnyImages, record) -> None:
    """One pass of the images through the model, `record(name, inputs, output)` called at each named module's
    every call."""
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: record(name, args[0], output)
        )
        for name in names
    ]
    try:
        for batch in in_batches(images, description="layer statistics"):
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()


def layer_outputs_max(model: nn.Module, names: list[str], images: AnyImages) -> dict[str, torch.Tensor]:
    """Each named module's largest |output| per channel (the last dimension) over the images."""
    found = {}

    def record(name, inputs, output):
        largest = output.detach().abs().flatten(0, -2).amax(0)
        found[name] = torch.maximum(found[name], largest) if name in found else largest

    hooked_pass(model, names, images, record)
    return found


def apply(layer: nn.Module, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's output on `inputs` with `weight` in place of its own."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(inputs, weight, layer.bias)
    return F.linear(inputs, weight, layer.bias)


def traced(model: nn.Module, key: str) -> torch.fx.Graph:
    """The model's graph (torch.fx); a model that cannot be traced is refused in one line naming the params key."""
    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception as error:  # tracing runs the model's Python; any of its errors means no graph to read
        raise PipelineError(f"{key}: {type(model).__name__} cannot be traced to find its layers ({error})") from None


def only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def module_of(node: torch.fx.Node | None, modules: dict, kinds: tuple) -> nn.Module | None:
    if node is not None and node.op == "call_module" and isinstance(modules[node.target], kinds):
        return modules[node.target]
    return None


def norms_after(model: nn.Module, key: str) -> dict[str, str]:
    """Each Conv2d or Linear whose output only a batch norm takes, and that batch norm."""
    modules = dict(model.named_modules())
    return {
        node.target: only_user(node).target
        for node in traced(model, key).nodes
        if module_of(node, modules, LAYERS) is not None and module_of(only_user(node), modules, NORMS) is not None
    }
