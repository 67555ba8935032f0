"""Which file in a model's folder is what.

The FP32 model is the folder `models/fp32/`, and each int8 variant the folder `models/int8_<method>/`, holding
what made it:
- eager (torch.ao): `model.pt`, tensors and plain settings only (`pipeline.formats.variants`), and `model.ts`, the
  same model traced and frozen into TorchScript: the file a user deploys (`pipeline.formats.torchscript`);
- pt2e (torchao), and an FP32 model you exported: `model.pt2`, a torch.export archive (`pipeline.formats.torch_export`);
- `model.onnx`, the same model for ONNX Runtime and OpenVINO (`pipeline.formats.onnx`), and for the openvino
  backend `model.xml` with its weights in `model.bin` (`pipeline.formats.openvino`). A variant made by a runtime's
  own quantizer holds only the runtime's file.
Beside the deployable file lies its input contract, `model.json` (`pipeline.formats.input_contract`).
"""

from pathlib import Path

from pipeline.errors import PipelineError

EAGER_FILE, TORCHSCRIPT_FILE, EXPORTED_FILE = "model.pt", "model.ts", "model.pt2"
ONNX_FILE, OPENVINO_FILE = "model.onnx", "model.xml"
LEFT_OUT_FILE = "left_out.json"  # in a variant's folder instead of a model: why the variant was not made
SETTINGS_KEY = "quantlab"  # the metadata entry (ONNX) or rt_info entry (OpenVINO) holding kind, arch and recipe


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
    if (location / TORCHSCRIPT_FILE).is_file() and not (location / EAGER_FILE).is_file():
        raise PipelineError(
            f"{location}: holds model.ts but no {EAGER_FILE}, an incomplete model folder (`dvc checkout --force` "
            "restores it, or run the stage that makes it)"
        )
    return any((location / name).is_file() for name in (EAGER_FILE, EXPORTED_FILE))


def is_exported(path: Path) -> bool:
    """Whether `path` is a torch.export archive (else an eager model file or a runtime's)."""
    return path.suffix == ".pt2"


def is_torchscript(path: Path) -> bool:
    return path.suffix == ".ts"
