"""ONNX Runtime and OpenVINO, the runtimes a CPU model is deployed on instead of PyTorch.

A variant's folder may hold, beside PyTorch's files, `model.onnx` (run by ONNX Runtime and by OpenVINO) and
`model.xml` with its weights in `model.bin` (OpenVINO's own format). A runnable made here takes a float32 batch
as a torch tensor and returns the logits as one, so that the runtimes are timed and scored exactly as PyTorch's
forms are. Both runtimes run on the thread count they are given, in one stream, in FP32 wherever the graph is
not int8 (OpenVINO would otherwise use bfloat16 on CPUs that have it, which is not the FP32 it claims).
"""

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from pipeline.artifacts import first_line
from pipeline.errors import PipelineError

ONNX_FILE, OPENVINO_FILE = "model.onnx", "model.xml"
RUNTIMES = ("onnxruntime", "openvino")
SETTINGS_KEY = "quantlab"  # the metadata entry (ONNX) or rt_info entry (OpenVINO) holding kind, arch and recipe

Runnable = Callable[[torch.Tensor], torch.Tensor]


def require(module: str) -> ModuleType:
    """Import a runtime, or say in one line that it is missing and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PipelineError(
            f"{module} is not installed in this environment ({first_line(error)}): `pip install {module}` "
            "or `make .venv/installed` installs it"
        ) from None


# what each `quantize.backend` of a runtime imports: the runtime, and the quantizer that writes its int8 files
BACKEND_MODULES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "nncf", "onnx")}


def require_backend(backend: str) -> None:
    """Before any work: stop in one line if `quantize.backend` names a runtime that is not installed."""
    for module in BACKEND_MODULES.get(backend, ()):
        require(module)


def missing(module: str) -> str | None:
    """Why `module` cannot be used here, or None if it can."""
    try:
        require(module)
    except PipelineError as error:
        return str(error)
    return None


def onnxruntime_runnable(path: Path, threads: int) -> Runnable:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT warns about every initializer it also lists as an input
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own classes per failure (InvalidProtobuf, Fail, InvalidGraph)
        raise PipelineError(f"{path}: ONNX Runtime cannot load it ({first_line(error)})") from None
    name = session.get_inputs()[0].name
    return lambda batch: torch.from_numpy(session.run(None, {name: batch.numpy()})[0])


def openvino_runnable(path: Path, threads: int) -> Runnable:
    request = openvino_compiled(path, threads).create_infer_request()
    # share_inputs reads the batch in place; the output is copied, since the request reuses its buffer
    return lambda batch: torch.from_numpy(request.infer([batch.numpy()], share_inputs=True)[0])


def openvino_compiled(path: Path, threads: int):
    ov = require("openvino")
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    try:
        return ov.Core().compile_model(read_openvino(path), "CPU", config)
    except RuntimeError as error:  # a model it reads but cannot run, e.g. an operator the CPU plugin lacks
        raise PipelineError(f"{path}: OpenVINO cannot compile it for the CPU ({last_line(error)})") from None


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


def last_line(error: Exception) -> str:
    """OpenVINO's messages open with C++ source locations; the reason is the last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def runtime_files(folder: Path) -> dict[str, Path]:
    """The file each runtime runs from a variant's folder: OpenVINO prefers its own format to the ONNX file."""
    onnx_file, ir_file = folder / ONNX_FILE, folder / OPENVINO_FILE
    files = {}
    if onnx_file.is_file():
        files["onnxruntime"] = onnx_file
    if ir_file.is_file() or onnx_file.is_file():
        files["openvino"] = ir_file if ir_file.is_file() else onnx_file
    return files


MAKERS = {"onnxruntime": onnxruntime_runnable, "openvino": openvino_runnable}


def runtime_forms(folder: Path, threads: int) -> tuple[dict[str, Runnable], dict[str, str]]:
    """Every installed runtime's runnable for the files in `folder`, and why any other was left out."""
    forms, left_out = {}, {}
    for runtime, path in runtime_files(folder).items():
        reason = missing(runtime)
        if reason is None:
            forms[runtime] = MAKERS[runtime](path, threads)
        else:
            left_out[runtime] = f"not measured: {reason}"
    return forms, left_out


def read_settings(folder: Path) -> dict:
    """Kind, arch and recipe that a runtime-only variant's file carries (written by `pipeline.exchange`)."""
    onnx_file, ir_file = folder / ONNX_FILE, folder / OPENVINO_FILE
    if ir_file.is_file():
        model = read_openvino(ir_file)
        text = model.get_rt_info([SETTINGS_KEY]).astype(str) if model.has_rt_info([SETTINGS_KEY]) else None
        source = ir_file
    elif onnx_file.is_file():
        onnx = require("onnx")
        try:
            graph = onnx.load(str(onnx_file), load_external_data=False)
        except Exception as error:  # onnx raises DecodeError from protobuf for a damaged file
            raise PipelineError(f"{onnx_file}: not a readable ONNX file ({first_line(error)})") from None
        props = {entry.key: entry.value for entry in graph.metadata_props}
        text, source = props.get(SETTINGS_KEY), onnx_file
    else:
        raise PipelineError(f"{folder}: holds no model file (run the stage that makes it)")
    if text is None:
        raise PipelineError(f"{source}: a model file, but not one this pipeline wrote (no '{SETTINGS_KEY}' entry)")
    return json.loads(text)
