"""OpenVINO's own format: `model.xml` with its weights in `model.bin`, read from it or from an ONNX file."""

import json
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.formats.files import SETTINGS_KEY
from pipeline.formats.onnx import tensor_bytes
from pipeline.optional import require
from pipeline.safe_io import final_name


def read_openvino(path: Path):
    """An OpenVINO model from an .onnx or .xml file (whose weights are the .bin beside it)."""
    ov = require("openvino")
    files = f"{path} and {path.with_suffix('.bin').name}" if path.suffix == ".xml" else str(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        return ov.Core().read_model(str(path))
    except RuntimeError as error:
        raise PipelineError(f"{files}: OpenVINO cannot read it ({last_line(error)})") from None


def converted_onnx(path: Path):
    """An ONNX file as OpenVINO's model converter makes it (`ov.convert_model`): reading it as it is keeps each
    Gemm as MatMul, a Multiply by its alpha and an Add, where NNCF's bias correction finds no bias to correct."""
    ov = require("openvino")
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        return ov.convert_model(str(path))
    except Exception as error:  # the converter raises its own classes (OpConversionFailure, GeneralFailure)
        raise PipelineError(f"{path}: OpenVINO cannot convert it ({last_line(error)})") from None


def last_line(error: Exception) -> str:
    """OpenVINO's messages open with C++ source locations; the reason is the last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def save_openvino(model, settings: dict, path: Path) -> None:
    """Write an OpenVINO model as `path` (.xml) and its weights beside it (.bin), `settings` in its rt_info, into
    a variant's temporary folder (`pipeline.safe_io.atomic_dir`): OpenVINO names the .bin after the .xml, so the
    pair is made whole by the folder. Weights are kept at their own widths: OpenVINO would otherwise store FP32
    weights as float16."""
    ov = require("openvino")
    model.set_rt_info(json.dumps(settings), [SETTINGS_KEY])
    try:
        ov.save_model(model, str(path), compress_to_fp16=False)
    except RuntimeError as error:  # OpenVINO's writer reports a full disk, as anything else, as a RuntimeError
        raise PipelineError(f"{final_name(path)}: OpenVINO could not write it ({last_line(error)})") from None


def onnx_to_openvino(onnx_file: Path, settings: dict, path: Path) -> None:
    """OpenVINO's own format of an ONNX file, e.g. a QDQ graph, whose pairs OpenVINO folds into int8 ops."""
    save_openvino(read_openvino(onnx_file), settings, path)


def openvino_settings(path: Path) -> str | None:
    """The settings an OpenVINO file carries in its rt_info (None: not a file this pipeline wrote)."""
    model = read_openvino(path)
    return model.get_rt_info([SETTINGS_KEY]).astype(str) if model.has_rt_info([SETTINGS_KEY]) else None


def openvino_floor_bytes(path: Path) -> int:
    """As `pipeline.formats.onnx.onnx_floor_bytes`, for the constants of an OpenVINO model."""
    return sum(tensor_bytes(op.get_data()) for op in read_openvino(path).get_ops() if op.get_type_name() == "Constant")
