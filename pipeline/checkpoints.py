"""Model files: an FP32 checkpoint or an int8 model, each loadable on its own.

A file holds tensors and plain settings only, no pickled classes: `arch` rebuilds the module and, for int8,
`recipe` says how it was quantized, so the same int8 structure is made empty and filled from the state dict.
Loading needs neither calibration data nor training state.
"""

from pathlib import Path

from torch import nn

from pipeline.artifacts import first_line, load_torch, save_torch
from pipeline.errors import PipelineError
from pipeline.models import build
from pipeline.quantize import empty_int8

FP32_MODEL = Path("models/fp32.pt")
INT8_MODELS = {method: Path(f"models/int8_{method}.pt") for method in ("dynamic", "static", "qat")}


def save_fp32(model: nn.Module, arch: dict, path: Path) -> None:
    save_torch({"kind": "fp32", "arch": arch, "state_dict": model.state_dict()}, path)


def save_int8(model: nn.Module, arch: dict, recipe: dict, path: Path) -> None:
    save_torch({"kind": "int8", "arch": arch, "recipe": recipe, "state_dict": model.state_dict()}, path)


def load_checkpoint(path: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the architecture settings it was built from."""
    checkpoint = load_torch(path)
    kind, arch = checkpoint.get("kind"), checkpoint.get("arch")
    if kind not in ("fp32", "int8") or not isinstance(arch, dict) or "state_dict" not in checkpoint:
        raise PipelineError(f"{path}: not a model file of this pipeline (no kind, arch and state_dict)")
    if expect is not None and kind != expect:
        method = checkpoint.get("recipe", {}).get("method", "")
        raise PipelineError(f"{path}: is an {kind} {method} model, but an {expect} model is needed here".replace("  ", " "))
    try:
        model = build(arch) if kind == "fp32" else empty_int8(arch, checkpoint.get("recipe", {}))
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise PipelineError(f"{path}: weights do not fit the model {arch} it names ({first_line(error)})") from None
    return model.eval(), arch


def load_fp32(path: Path) -> tuple[nn.Module, dict]:
    return load_checkpoint(path, expect="fp32")


def load_model(path: Path) -> nn.Module:
    return load_checkpoint(path)[0]
