"""Model files: an FP32 checkpoint or an int8 model, each loadable on its own.

A file holds tensors and plain settings only, no pickled classes: `arch` rebuilds the module and, for int8,
`recipe` says how it was quantized, so the same int8 structure is made empty and filled from the state dict.
Loading needs neither calibration data nor training state.
"""

from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import first_line, load_torch, save_torch
from pipeline.errors import PipelineError
from pipeline.latency import save_deployable
from pipeline.models import build
from pipeline.quantize import empty_int8

FP32_MODEL = Path("models/fp32.pt")
INT8_MODELS = {method: Path(f"models/int8_{method}.pt") for method in ("dynamic", "static", "qat")}


def deployable_path(path: Path) -> Path:
    """Where the TorchScript twin of a model file lives: models/int8_static.pt -> models/int8_static.ts."""
    return path.with_suffix(".ts")


def save_fp32(model: nn.Module, arch: dict, path: Path) -> None:
    """The checkpoint (weights and arch) and its deployable TorchScript twin."""
    save_torch({"kind": "fp32", "arch": arch, "state_dict": model.state_dict()}, path)
    save_deployable(model, deployable_path(path))


def save_int8(model: nn.Module, arch: dict, recipe: dict, path: Path) -> None:
    """The int8 model (state dict, arch, recipe) and its deployable TorchScript twin."""
    save_torch({"kind": "int8", "arch": arch, "recipe": recipe, "state_dict": model.state_dict()}, path)
    save_deployable(model, deployable_path(path))


def read_model(path: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the settings its file carries: kind, arch and, for int8, the recipe."""
    checkpoint = load_torch(path)
    kind, arch = checkpoint.get("kind"), checkpoint.get("arch")
    if kind not in ("fp32", "int8") or not isinstance(arch, dict) or "state_dict" not in checkpoint:
        raise PipelineError(f"{path}: not a model file of this pipeline (no kind, arch and state_dict)")
    if expect is not None and kind != expect:
        method = checkpoint.get("recipe", {}).get("method", "")
        raise PipelineError(
            f"{path}: is an {kind} {method} model, but an {expect} model is needed here".replace("  ", " ")
        )
    try:
        model = build(arch) if kind == "fp32" else empty_int8(arch, checkpoint.get("recipe", {}))
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise PipelineError(f"{path}: weights do not fit the model {arch} it names ({first_line(error)})") from None
    return model.eval(), {"kind": kind, "arch": arch, "recipe": checkpoint.get("recipe", {})}


def load_checkpoint(path: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the architecture settings it was built from."""
    model, settings = read_model(path, expect)
    return model, settings["arch"]


def floor_bytes(state_dict: dict) -> int:
    """The least a file could hold: each weight at its own width (1 byte for int8), float32 biases and scales.

    Zero points are left out (symmetric weights have none; activation ones fit in a byte), and so is every
    byte of container, names and code.
    """
    total = 0
    for key, value in state_dict.items():
        for tensor in value if isinstance(value, tuple) else (value,):
            if (
                not isinstance(tensor, torch.Tensor)
                or key.endswith("zero_point")
                or key.endswith("num_batches_tracked")
            ):
                continue
            if tensor.is_quantized:
                per_channel = tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                total += tensor.numel() * tensor.element_size() + 4 * (
                    len(tensor.q_per_channel_scales()) if per_channel else 1
                )
            else:
                total += tensor.numel() * 4
    return total


def load_fp32(path: Path) -> tuple[nn.Module, dict]:
    return load_checkpoint(path, expect="fp32")


def load_model(path: Path) -> nn.Module:
    return load_checkpoint(path)[0]
