"""Model files: an FP32 checkpoint or an int8 model, each loadable on its own.

The FP32 model is the folder `models/fp32/`, and each int8 variant the folder `models/int8_<method>/`, holding
what made it:
- eager (torch.ao): `model.pt`, tensors and plain settings only, no pickled classes (`arch` rebuilds the module,
  `recipe` says how it was quantized, so the same int8 structure is made empty and filled from the state dict),
  and `model.ts`, the same model traced and frozen into TorchScript: the file a user deploys;
- pt2e (torchao), and an FP32 model you exported: `model.pt2`, a torch.export archive of the graph, with kind,
  arch and recipe as an extra file (`pipeline.archives`).
Beside the deployable file lies its input contract, `model.json` (`pipeline.contract`). Loading needs neither
calibration data nor training state.

Every folder also holds `model.onnx`, the same model for ONNX Runtime and OpenVINO (`pipeline.exchange`); the
variants of `quantize.backend: onnxruntime | openvino` made by the runtime's own quantizer hold only the
runtime's file (`model.onnx`, or `model.xml` and `model.bin`) and its contract (`save_runtime_variant`).
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from pipeline.archives import SETTINGS_ENTRY, load_archive, write_archive
from pipeline.artifacts import atomic_dir, first_line, load_torch, save_torch
from pipeline.contract import write_contract
from pipeline.data import DataInfo
from pipeline.errors import PipelineError
from pipeline.exchange import export_onnx, onnx_to_openvino
from pipeline.models import build, example_input
from pipeline.quantize import empty_int8
from pipeline.runtimes import ONNX_FILE, OPENVINO_FILE, runtime_files
from pipeline.torchscript import save_deployable

EAGER_FILE, EXPORTED_FILE = "model.pt", "model.pt2"


def model_file(location: Path) -> Path:
    """The file to load for a model: the path itself, or the model file inside an int8 variant's folder."""
    if not location.is_dir():
        return location
    for name in (EAGER_FILE, EXPORTED_FILE):
        if (location / name).is_file():
            return location / name
    raise PipelineError(f"{location}: holds no {EAGER_FILE} or {EXPORTED_FILE} (run the stage that makes it)")


def onnx_file(location: Path) -> Path:
    """The ONNX file of the model at `location` (its folder, or a file in it)."""
    path = (location if location.is_dir() else location.parent) / ONNX_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    return path


def holds_pytorch_model(location: Path) -> bool:
    """Whether `location` is a PyTorch model file or a folder holding one (else only a runtime's files)."""
    if not location.is_dir():
        return True
    if (location / EAGER_FILE).with_suffix(".ts").is_file() and not (location / EAGER_FILE).is_file():
        raise PipelineError(
            f"{location}: holds model.ts but no {EAGER_FILE}, an incomplete model folder (`dvc checkout --force` "
            "restores it, or run the stage that makes it)"
        )
    return any((location / name).is_file() for name in (EAGER_FILE, EXPORTED_FILE))


def deployable_path(path: Path) -> Path:
    """The file a user deploys: the TorchScript twin of an eager model file, the torch.export archive itself, or
    in a folder that only a runtime runs, that runtime's file."""
    if not holds_pytorch_model(path):
        return next(iter(runtime_files(path).values()), path / ONNX_FILE)
    if path.suffix in (".ts", ".onnx", ".xml"):  # a deployable file named directly
        return path
    path = model_file(path)
    return path if path.suffix == ".pt2" else path.with_suffix(".ts")


def save_fp32(model: nn.Module, arch: dict, folder: Path, data: DataInfo) -> None:
    """The FP32 model's folder, whole or not at all: the checkpoint (weights and arch) and its TorchScript twin,
    or for a model you exported its torch.export archive; and the deployable file's input contract."""
    settings = {"kind": "fp32", "arch": arch}
    with atomic_dir(folder) as temporary:
        if isinstance(model, torch.export.ExportedProgram):
            write_archive(model, settings, temporary / EXPORTED_FILE)
            model = model.module()
        else:
            save_torch({**settings, "state_dict": model.state_dict()}, temporary / EAGER_FILE)
            save_deployable(model, example_input(arch), deployable_path(temporary))
        export_onnx(model, example_input(arch), settings, temporary / ONNX_FILE)
        write_contract(deployable_path(temporary), data, engine=None)


def save_int8(model: nn.Module, arch: dict, recipe: dict, path: Path) -> None:
    """The int8 model (state dict, arch, recipe) and its deployable TorchScript twin."""
    save_torch({"kind": "int8", "arch": arch, "recipe": recipe, "state_dict": model.state_dict()}, path)
    save_deployable(model, example_input(arch), deployable_path(path))


def save_variant(
    model: nn.Module, arch: dict, recipe: dict, folder: Path, data: DataInfo, write_onnx: Callable | None = None
) -> None:
    """Write an int8 variant's folder, whole or not at all: eager files, or a torch.export archive for pt2e; the
    model as ONNX, exported, or written by `write_onnx(settings, path)` where it cannot be (dynamic int8); for
    the openvino backend also in OpenVINO's format; and the deployable file's input contract."""
    settings = {"kind": "int8", "arch": arch, "recipe": recipe}
    with atomic_dir(folder) as temporary:
        if recipe["backend"] == "pt2e":
            save_exported(model, arch, recipe, temporary / EXPORTED_FILE)
        else:
            save_int8(model, arch, recipe, temporary / EAGER_FILE)
        if write_onnx is None:
            export_onnx(model, example_input(arch), settings, temporary / ONNX_FILE)
        else:
            write_onnx(settings, temporary / ONNX_FILE)
        if recipe["backend"] == "openvino":
            onnx_to_openvino(temporary / ONNX_FILE, settings, temporary / OPENVINO_FILE)
        deployable = deployable_path(temporary)
        engine = recipe["engine"] if deployable.suffix == ".ts" else None  # eager int8 weights are packed for it
        write_contract(deployable, data, engine)


def save_runtime_variant(write: Callable, file_name: str, arch: dict, recipe: dict, folder: Path, data: DataInfo):
    """Write the folder of an int8 variant that only a runtime runs: the file `write(settings, path)` makes, and
    its input contract."""
    with atomic_dir(folder) as temporary:
        write({"kind": "int8", "arch": arch, "recipe": recipe}, temporary / file_name)
        write_contract(temporary / file_name, data, engine=None)


def save_exported(model: nn.Module, arch: dict, recipe: dict, path: Path) -> None:
    from pipeline.pt2e import export  # torchao is imported only where the pt2e backend is used

    write_archive(export(model, arch["input"]), {"kind": "int8", "arch": arch, "recipe": recipe}, path)


def read_exported(path: Path) -> tuple[nn.Module, dict]:
    # torchao's quantize/dequantize ops and int8 tensor types, and the Inductor passes that lower them to int8
    # kernels, which are registered when X86InductorQuantizer's module is imported. Without those passes,
    # torch.compile runs a loaded graph in FP32 (measured: CNN [64, 128] at batch 256, 185 ms against 55 ms).
    import pipeline.pt2e  # noqa: F401

    program, settings = load_archive(path)
    if settings is None:
        raise PipelineError(f"{path}: a torch.export archive, but not one this pipeline wrote (no {SETTINGS_ENTRY})")
    # An exported graph refuses train() and eval() of its own; this makes them switch its BN and dropout ops, so
    # an FP32 graph goes through the same calls as a module (pt2e's int8 graphs are only run in inference).
    return pipeline.pt2e.allow_exported_model_train_eval(program.module()), {"recipe": {}, **settings}


def read_model(location: Path, expect: str | None = None) -> tuple[nn.Module, dict]:
    """The model in eval mode, and the settings its file carries: kind, arch and, for int8, the recipe."""
    path = model_file(location)
    model, settings = read_exported(path) if path.suffix == ".pt2" else read_eager(path)
    if expect is not None and settings["kind"] != expect:
        method = settings["recipe"].get("method", "")
        raise PipelineError(
            f"{path}: is an {settings['kind']} {method} model, but an {expect} model is needed here".replace("  ", " ")
        )
    return model, settings


def read_eager(path: Path) -> tuple[nn.Module, dict]:
    checkpoint = load_torch(path)
    kind, arch = checkpoint.get("kind"), checkpoint.get("arch")
    if kind not in ("fp32", "int8") or not isinstance(arch, dict) or "state_dict" not in checkpoint:
        raise PipelineError(f"{path}: not a model file of this pipeline (no kind, arch and state_dict)")
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

    Integer tensors wider than a byte are left out: zero points (symmetric weights have none, activation ones fit
    in a byte) and counters. So is every byte of container, names and code.
    """
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


def load_fp32(path: Path) -> tuple[nn.Module, dict]:
    return load_checkpoint(path, expect="fp32")


def load_model(path: Path) -> nn.Module:
    return load_checkpoint(path)[0]
