"""An int8 variant's folder (`models/int8_<method>/`), written whole by a backend and read back by any stage.

What a folder holds depends on the backend that made it (`pipeline.formats.files`); every file in it records
the model's kind, arch and recipe, so the folder says on its own what it is. Reading needs neither calibration
data nor training state, and runs no code from the files. Rebuilding a PyTorch module from a variant's weights
takes the backend that made it: `pipeline.backends.loading`.
"""

from collections.abc import Callable
from pathlib import Path

from torch import nn

from pipeline.data.prepared import DataInfo
from pipeline.formats.files import EAGER_FILE, LEFT_OUT_FILE, TORCHSCRIPT_FILE
from pipeline.formats.input_contract import write_contract
from pipeline.formats.onnx import export_onnx
from pipeline.formats.openvino import onnx_to_openvino
from pipeline.formats.torchscript import save_deployable
from pipeline.models.architectures import example_input
from pipeline.safe_io import atomic_dir, load_json, save_json, save_torch

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


def save_left_out(reason: str, folder: Path) -> None:
    """A variant's folder saying why it was not made (e.g. `qat.epochs: 0`), in place of a model."""
    with atomic_dir(folder) as temporary:
        save_json({"left_out": reason}, temporary / LEFT_OUT_FILE)


def left_out_reason(folder: Path) -> str | None:
    """Why the variant in `folder` was not made, or None where it was."""
    path = folder / LEFT_OUT_FILE
    return str(load_json(path).get("left_out")) if path.is_file() else None
