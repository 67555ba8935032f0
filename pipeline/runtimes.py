"""ONNX Runtime and OpenVINO, the runtimes a CPU model is deployed on instead of PyTorch.

Each runtime is described once (`RUNTIMES`): its name, which is also its package's (whose version measurements
record), the file formats it runs in order of preference (`pipeline.formats.deployables`), and how to open a file
as a runnable. A variant's folder may hold, beside PyTorch's files, `model.onnx` (run by ONNX Runtime and by
OpenVINO) and `model.xml` with its weights in `model.bin` (OpenVINO's own format). A runnable made here takes a
float32 batch as a torch tensor and returns the logits as one, so that the runtimes are timed and scored exactly as
PyTorch's forms are. Both runtimes run on the thread count they are given, in one stream, in FP32 wherever the graph is
not int8 (OpenVINO would otherwise use bfloat16 on CPUs that have it, which is not the FP32 it claims).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.formats.deployables import ONNX, OPENVINO, FileFormat
from pipeline.formats.openvino import last_line, read_openvino
from pipeline.optional import missing, require
from pipeline.safe_io import first_line

Runnable = Callable[[torch.Tensor], torch.Tensor]


def onnxruntime_runnable(path: Path, threads: int, optimized: bool = True) -> Runnable:
    """ONNX Runtime's session for the file. Not `optimized`: no graph optimization, so each QuantizeLinear and
    DequantizeLinear runs as written and every other op in FP32, with no op fused into an int8 kernel: the file's
    own arithmetic, as a reference for the kernels."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT warns about every initializer it also lists as an input
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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


@dataclass(frozen=True)
class Runtime:
    name: str  # also the package that holds it
    reads: tuple[FileFormat, ...]  # the formats it runs, its own first, then in order of preference
    runnable: Callable[[Path, int], Runnable]  # a file and a thread count in, the runnable out


RUNTIMES = {
    runtime.name: runtime
    for runtime in (
        Runtime("onnxruntime", (ONNX,), onnxruntime_runnable),
        Runtime("openvino", (OPENVINO, ONNX), openvino_runnable),  # its own format, else the ONNX file
    )
}


def runtime_files(folder: Path) -> dict[str, Path]:
    """The file each runtime runs from a variant's folder, where it holds one that runtime reads."""
    files = {}
    for runtime in RUNTIMES.values():
        found = [folder / kind.file for kind in runtime.reads if (folder / kind.file).is_file()]
        if found:
            files[runtime.name] = found[0]
    return files


def runtime_of(deployable: Path) -> str | None:
    """The runtime that runs a deployable file in its own format, or None for PyTorch's files."""
    owners = [runtime.name for runtime in RUNTIMES.values() if runtime.reads[0].suffix == deployable.suffix]
    return owners[0] if owners else None


def runtime_forms(folder: Path, threads: int) -> tuple[dict[str, Runnable], dict[str, str]]:
    """Every installed runtime's runnable for the files in `folder`, and why any other was left out: not
    installed, or unable to load the file."""
    forms, left_out = {}, {}
    for runtime, path in runtime_files(folder).items():
        reason = missing(runtime)
        if reason is not None:
            left_out[runtime] = f"not measured: {reason}"
            continue
        try:
            forms[runtime] = RUNTIMES[runtime].runnable(path, threads)
        except PipelineError as error:
            left_out[runtime] = f"not measured: {error}"
    return forms, left_out
