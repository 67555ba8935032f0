"""How big each file of a model is, against the least its weights could be stored in.

The floor counts each stored tensor at its own width (1 byte for int8), float32 biases and scales; integer tensors
wider than a byte are left out (zero points, shapes, counters), and so is every byte of container, names and code.
"""

from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from pipeline.formats.deployables import deployable_path, format_of, runtime_formats_in
from pipeline.formats.files import model_file


def floor_bytes(state_dict: dict) -> int:
    """The least a PyTorch model's weights could be stored in."""
    return sum(
        least_bytes(tensor)
        for value in state_dict.values()
        for tensor in (value if isinstance(value, tuple) else (value,))  # eager packed params are tuples
        if isinstance(tensor, torch.Tensor)
    )


def least_bytes(tensor: torch.Tensor) -> int:
    if is_traceable_wrapper_subclass(tensor):  # torchao's int8 weights: int8 data plus scales
        return sum(least_bytes(getattr(tensor, name)) for name in tensor.__tensor_flatten__()[0])
    if tensor.is_quantized:
        per_channel = tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        return tensor.numel() * tensor.element_size() + 4 * (len(tensor.q_per_channel_scales()) if per_channel else 1)
    if not tensor.is_floating_point() and tensor.element_size() > 1:
        return 0
    return tensor.numel() * min(tensor.element_size(), 4)  # float64 scales need no more than float32


def measure_size(model: nn.Module | None, folder: Path) -> dict:
    """The model file's bytes, the deployable file's, and every deployed file against the least it could hold."""
    files = deployed_files(model, folder)
    deployable = deployable_path(folder)
    main = files[format_of(deployable).name]
    return {
        "size_bytes": (model_file(folder) if model is not None else deployable).stat().st_size,
        "deploy_size_bytes": main["bytes"],
        "floor_bytes": main["floor_bytes"],
        "deploy_floor_ratio": main["floor_ratio"],
        "files": files,
    }


def deployed_files(model: nn.Module | None, folder: Path) -> dict:
    """{format: bytes, floor_bytes, floor_ratio} for each deployable file in `folder`, with the files beside it that
    hold its weights (OpenVINO's .bin)."""
    found = {}
    if model is not None:
        deployable = deployable_path(folder)
        found[format_of(deployable).name] = (deployable.stat().st_size, floor_bytes(model.state_dict()))
    for kind, path in runtime_formats_in(folder):
        found[kind.name] = (kind.size_bytes(path), kind.floor(path))
    return {
        name: {"bytes": size, "floor_bytes": floor, "floor_ratio": round(size / floor, 4)}
        for name, (size, floor) in found.items()
    }
