"""How big each file of a model is, against the least its weights could be stored in.

The floor counts each stored tensor at its own width (1 byte for int8), float32 biases and scales; integer tensors
wider than a byte are left out (zero points, shapes, counters), and so is every byte of container, names and code.
"""

from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from pipeline.formats.files import ONNX_FILE, OPENVINO_FILE, deployable_path, format_of, model_file
from pipeline.formats.onnx import onnx_floor_bytes, tensor_bytes
from pipeline.formats.openvino import read_openvino


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


def openvino_floor_bytes(path: Path) -> int:
    """As `onnx_floor_bytes`, for the constants of an OpenVINO model."""
    model = read_openvino(path)
    return sum(tensor_bytes(op.get_data()) for op in model.get_ops() if op.get_type_name() == "Constant")


def measure_size(model: nn.Module | None, folder: Path) -> dict:
    """The model file's bytes, the deployable file's, and every deployed file against the least it could hold."""
    files = deployed_files(model, folder)
    deployable = deployable_path(folder)
    main = files[format_of(deployable)]
    return {
        "size_bytes": (model_file(folder) if model is not None else deployable).stat().st_size,
        "deploy_size_bytes": main["bytes"],
        "floor_bytes": main["floor_bytes"],
        "deploy_floor_ratio": main["floor_ratio"],
        "files": files,
    }


def deployed_files(model: nn.Module | None, folder: Path) -> dict:
    """{format: bytes, floor_bytes, floor_ratio} for each deployable file in `folder`; OpenVINO's counts .xml+.bin."""
    found = {}
    if model is not None:
        deployable = deployable_path(folder)
        found[format_of(deployable)] = (deployable.stat().st_size, floor_bytes(model.state_dict()))
    if (folder / ONNX_FILE).is_file():
        found["onnx"] = ((folder / ONNX_FILE).stat().st_size, onnx_floor_bytes(folder / ONNX_FILE))
    if (folder / OPENVINO_FILE).is_file():
        xml = folder / OPENVINO_FILE
        found["openvino"] = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size, openvino_floor_bytes(xml))
    return {
        name: {"bytes": size, "floor_bytes": floor, "floor_ratio": round(size / floor, 4)}
        for name, (size, floor) in found.items()
    }
