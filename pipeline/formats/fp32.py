"""The FP32 model's file: written by `train`, read by `export` and by every stage that starts from the FP32 model.

It is `model.pt` (weights and the arch that rebuilds the module; nothing pickled), or for a model you exported its
torch.export archive `model.pt2`. `export` (`pipeline.formats.fp32_export`) adds the files deployed beside it.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.formats.files import EAGER_FILE, EXPORTED_FILE, is_exported, model_file
from pipeline.formats.files import onnx_file as onnx_file_of
from pipeline.formats.torch_export import SETTINGS_ENTRY, allow_train_eval, load_archive, write_archive
from pipeline.models.architectures import build
from pipeline.safe_io import atomic_dir, first_line, load_torch, save_torch


@dataclass(frozen=True)
class Fp32Model:
    """The FP32 model for inference, the arch it was built from, and where its files are."""

    module: nn.Module
    arch: dict
    location: Path

    @property
    def onnx_file(self) -> Path:
        return onnx_file_of(self.location)


def save_trained(model: nn.Module | torch.export.ExportedProgram, arch: dict, folder: Path) -> None:
    """The folder `train` writes, whole or not at all: the checkpoint (weights and arch), or for a model you
    exported its torch.export archive."""
    settings = {"kind": "fp32", "arch": arch}
    with atomic_dir(folder) as temporary:
        if isinstance(model, torch.export.ExportedProgram):
            write_archive(model, settings, temporary / EXPORTED_FILE)
        else:
            save_torch({**settings, "state_dict": model.state_dict()}, temporary / EAGER_FILE)


def read_fp32(location: Path) -> Fp32Model:
    """The FP32 model at `location` (its folder or its model file); an int8 model there is refused by name."""
    path = model_file(location)
    exported = is_exported(path)
    module, settings = read_archive_module(path) if exported else read_weights_file(path)
    require_kind(settings, "fp32", path)
    # An exported graph stays as it was exported; a module is built and put in eval mode.
    module = module if exported else load_weights(build, module, path)
    return Fp32Model(module, settings["arch"], location)


def require_kind(settings: dict, expect: str, path: Path) -> None:
    """Refuse, naming what it is, a model file of another kind than `expect` (fp32 or int8)."""
    if settings["kind"] != expect:
        method = settings.get("recipe", {}).get("method", "")
        raise PipelineError(
            f"{path}: is an {settings['kind']} {method} model, but an {expect} model is needed here".replace("  ", " ")
        )


def read_weights_file(path: Path) -> tuple[dict, dict]:
    """An eager model file's contents, checked to hold kind, arch and state dict, and its settings."""
    checkpoint = load_torch(path)
    kind, arch = checkpoint.get("kind"), checkpoint.get("arch")
    if kind not in ("fp32", "int8") or not isinstance(arch, dict) or "state_dict" not in checkpoint:
        raise PipelineError(f"{path}: not a model file of this pipeline (no kind, arch and state_dict)")
    return checkpoint, {"kind": kind, "arch": arch, "recipe": checkpoint.get("recipe", {})}


def load_weights(make, checkpoint: dict, path: Path) -> nn.Module:
    """`make(arch)` filled with the checkpoint's weights; weights that do not fit are named in one line."""
    try:
        model = make(checkpoint["arch"])
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise PipelineError(
            f"{path}: weights do not fit the model {checkpoint['arch']} it names ({first_line(error)})"
        ) from None
    return model.eval()


def read_archive_module(path: Path) -> tuple[nn.Module, dict]:
    """A torch.export archive this pipeline wrote, as a module, and its settings."""
    program, settings = load_archive(path)
    if settings is None:
        raise PipelineError(f"{path}: a torch.export archive, but not one this pipeline wrote (no {SETTINGS_ENTRY})")
    # An exported graph refuses train() and eval() of its own; this makes them switch its BN and dropout ops, so
    # an FP32 graph goes through the same calls as a module (pt2e's int8 graphs are only run in inference).
    return allow_train_eval(program.module()), {"recipe": {}, **settings}
