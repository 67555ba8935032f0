"""Every file format a deployable model comes in, each described once: its name, its file in a model's folder, the
files beside it that hold its weights, the least its weights could be stored in, and, for a runtime's format, the
settings (kind, arch, recipe) it records. Sizes, a runtime-only variant's settings and the runtimes
(`pipeline.runtimes`) all ask these descriptions; a new format is a module of its own and a line in FORMATS.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.formats.files import (
    EXPORTED_FILE,
    ONNX_FILE,
    OPENVINO_FILE,
    SETTINGS_KEY,
    TORCHSCRIPT_FILE,
    holds_pytorch_model,
    is_exported,
    model_file,
)
from pipeline.formats.onnx import onnx_floor_bytes, onnx_settings
from pipeline.formats.openvino import openvino_floor_bytes, openvino_settings


@dataclass(frozen=True)
class FileFormat:
    name: str  # as metrics.json lists sizes
    file: str  # its name in a model's folder
    companions: tuple[str, ...] = ()  # suffixes of the files beside it that hold its weights
    # a runtime's format: the least its weights could be stored in, and the settings its file records (None: not
    # written by this pipeline). PyTorch's formats are sized from the module they load into.
    floor: Callable[[Path], int] | None = None
    settings: Callable[[Path], str | None] | None = None

    @property
    def suffix(self) -> str:
        return Path(self.file).suffix

    def size_bytes(self, path: Path) -> int:
        """The file's bytes and those of the files beside it that belong to it."""
        return path.stat().st_size + sum(path.with_suffix(suffix).stat().st_size for suffix in self.companions)


TORCHSCRIPT = FileFormat("torchscript", TORCHSCRIPT_FILE)
TORCH_EXPORT = FileFormat("torch.export", EXPORTED_FILE)
ONNX = FileFormat("onnx", ONNX_FILE, floor=onnx_floor_bytes, settings=onnx_settings)
OPENVINO = FileFormat("openvino", OPENVINO_FILE, (".bin",), floor=openvino_floor_bytes, settings=openvino_settings)
FORMATS = (TORCHSCRIPT, TORCH_EXPORT, ONNX, OPENVINO)
# The formats a runtime runs, in the order a folder holding only those is deployed from
RUNTIME_FORMATS = tuple(kind for kind in FORMATS if kind.settings is not None)


def format_of(deployable: Path) -> FileFormat:
    """The format of a deployable file, by its suffix."""
    found = [kind for kind in FORMATS if kind.suffix == deployable.suffix]
    if not found:
        known = ", ".join(kind.suffix for kind in FORMATS)
        raise PipelineError(f"{deployable}: not a deployable file ({known})")
    return found[0]


def runtime_formats_in(folder: Path) -> list[tuple[FileFormat, Path]]:
    """Each runtime's format whose file the folder holds, with that file."""
    return [(kind, folder / kind.file) for kind in RUNTIME_FORMATS if (folder / kind.file).is_file()]


def read_runtime_settings(folder: Path) -> dict:
    """Kind, arch and recipe that a variant's runtime files record (each records the same): every variant folder holds
    one, and a runtime-only variant nothing else."""
    found = runtime_formats_in(folder)
    if not found:
        raise PipelineError(f"{folder}: holds no model file (run the stage that makes it)")
    kind, path = found[0]
    text = kind.settings(path)
    if text is None:
        raise PipelineError(f"{path}: a model file, but not one this pipeline wrote (no '{SETTINGS_KEY}' entry)")
    return json.loads(text)


def deployable_path(path: Path) -> Path:
    """The file a user deploys: the TorchScript twin of an eager model file, the torch.export archive itself, a
    deployable file named directly, or in a folder that only a runtime runs, that runtime's file."""
    if not holds_pytorch_model(path):
        found = runtime_formats_in(path)
        return found[0][1] if found else path / ONNX.file
    if any(path.suffix == kind.suffix for kind in FORMATS):  # a deployable file named directly
        return path
    path = model_file(path)
    return path if is_exported(path) else path.with_suffix(TORCHSCRIPT.suffix)
