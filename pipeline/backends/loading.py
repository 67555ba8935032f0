"""A model's file as a PyTorch module, whichever backend made it.

`pipeline.formats` reads the files themselves and runs no code from them; what a module is built from takes this
layer: an FP32 `model.pt` is its architecture (`pipeline.models`) filled with its weights, an int8 `model.pt` the
structure of torch.ao's int8 modules its recipe makes (`pipeline.backends.eager.modules.empty_int8`), and a
torch.export archive (`model.pt2`) is its own graph.
"""

from collections.abc import Callable
from pathlib import Path

from torch import nn

from pipeline.backends.eager.modules import empty_int8
from pipeline.backends.registry import recipe_from
from pipeline.formats.files import is_exported, model_file
from pipeline.formats.fp32 import load_weights, read_archive_module, read_weights_file, require_kind
from pipeline.models.architectures import build


def load_module(location: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model at `location` (a model file, or a variant's folder) in eval mode, and the settings its file
    records: kind, arch and, for int8, the recipe. `expect` (fp32 or int8) refuses the other kind by name."""
    path = model_file(location)
    if is_exported(path):
        model, settings = read_archive_module(path)
    else:
        checkpoint, settings = read_weights_file(path)
        model = load_weights(module_maker(settings, path), checkpoint, path)
    if expect is not None:
        require_kind(settings, expect, path)
    return model, settings


def module_maker(settings: dict, path: Path) -> Callable[[dict], nn.Module]:
    """What builds the empty module a `model.pt` file's weights fill: the FP32 model, or its int8 structure."""
    if settings["kind"] == "fp32":
        return build
    recipe = recipe_from(settings["recipe"], path)
    return lambda arch: empty_int8(arch, recipe)
