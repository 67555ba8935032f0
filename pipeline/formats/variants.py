"""An int8 variant's folder (`models/int8_<method>/`), written whole by a backend and read back by any stage.

What a folder holds depends on the backend that made it (`pipeline.formats.files`); every file in it records
the model's kind, arch and recipe, so the folder says on its own what it is. Reading needs neither calibration
data nor training state, and runs no code from the files.
"""

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from pipeline.backends.eager.modules import empty_int8
from pipeline.backends.recipes import recipe_from
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import (
    EAGER_FILE,
    ONNX_FILE,
    OPENVINO_FILE,
    SETTINGS_KEY,
    TORCHSCRIPT_FILE,
    is_exported,
    model_file,
)
from pipeline.formats.fp32 import load_weights, read_checkpoint, read_exported, require_kind
from pipeline.formats.input_contract import write_contract
from pipeline.formats.onnx import export_onnx, onnx_settings
from pipeline.formats.openvino import onnx_to_openvino, openvino_settings
from pipeline.formats.torchscript import save_deployable
from pipeline.models.architectures import build, example_input
from pipeline.safe_io import atomic_dir, save_torch

# Writes one file of a variant into its temporary folder, given the settings every file records.
Writer = Callable[[dict, Path], None]


def save_variant(
    folder: Path, data: DataInfo, settings: dict, writers: dict[str, Writer], deployable: str, engine=None
) -> None:
    """Write an int8 variant's folder, whole or not at all: each file `writers` names, in order, and the input
    contract of the `deployable` one. `engine`: the quantized engine that file needs set before loading it
    (eager int8 weights are packed for it)."""
    with atomic_dir(folder) as temporary:
        for name, write in writers.items():
            write(settings, temporary / name)
        write_contract(temporary / deployable, data, engine)


def eager_writers(model: nn.Module, arch: dict) -> dict[str, Writer]:
    """An eager model's file (state dict, kind, arch, recipe) and its TorchScript twin, the file a user deploys."""
    return {
        EAGER_FILE: lambda settings, path: save_torch({**settings, "state_dict": model.state_dict()}, path),
        TORCHSCRIPT_FILE: lambda _settings, path: save_deployable(model, example_input(arch), path),
    }


def onnx_writer(model: nn.Module, arch: dict) -> Writer:
    """The model exported to ONNX."""
    return lambda settings, path: export_onnx(model, example_input(arch), settings, path)


def openvino_writer(source: str) -> Writer:
    """OpenVINO's own format of the variant's ONNX file `source` (written before it)."""
    return lambda settings, path: onnx_to_openvino(path.parent / source, settings, path)


def int8_settings(arch: dict, recipe) -> dict:
    return {"kind": "int8", "arch": arch, "recipe": recipe.settings()}


def read_model(location: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the settings its file carries: kind, arch and, for int8, the recipe."""
    path = model_file(location)
    if is_exported(path):
        import pipeline.backends.pt2e  # noqa: F401  # registers the ops and Inductor passes of its int8 graphs

        model, settings = read_exported(path)
    else:
        checkpoint, settings = read_checkpoint(path)
        model = load_weights(module_maker(settings, path), checkpoint, path)
    if expect is not None:
        require_kind(settings, expect, path)
    return model, settings


def module_maker(settings: dict, path: Path) -> Callable[[dict], nn.Module]:
    """What builds the empty module an eager model file's weights fill: the FP32 model, or its int8 structure."""
    if settings["kind"] == "fp32":
        return build
    recipe = recipe_from(settings["recipe"], path)
    return lambda arch: empty_int8(arch, recipe)


def read_settings(folder: Path) -> dict:
    """Kind, arch and recipe that a runtime-only variant's file carries."""
    onnx, ir = folder / ONNX_FILE, folder / OPENVINO_FILE
    if ir.is_file():
        text, source = openvino_settings(ir), ir
    elif onnx.is_file():
        text, source = onnx_settings(onnx), onnx
    else:
        raise PipelineError(f"{folder}: holds no model file (run the stage that makes it)")
    if text is None:
        raise PipelineError(f"{source}: a model file, but not one this pipeline wrote (no '{SETTINGS_KEY}' entry)")
    return json.loads(text)


def load_checkpoint(path: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the architecture settings it was built from."""
    model, settings = read_model(path, expect)
    return model, settings["arch"]


def load_model(path: Path) -> nn.Module:
    return load_checkpoint(path)[0]
