"""Stage `dynamic`: int8 weights for every Linear layer, activations quantized on the fly.

python -m pipeline dynamic
"""

from functools import partial
from pathlib import Path

import typer

from pipeline.checkpoints import load_fp32, onnx_file, save_runtime_variant, save_variant
from pipeline.data import read_info
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR
from pipeline.quantize import quantize_dynamic, use_engine
from pipeline.runtime_quantize import onnxruntime_dynamic, openvino_dynamic
from pipeline.runtimes import ONNX_FILE, OPENVINO_FILE, RUNTIMES, require_backend


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 model folder to quantize"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding dataset.json"),
    out: Path = typer.Option(INT8_MODELS["dynamic"], "--out", help="folder for the int8 model"),
) -> None:
    """Quantize the FP32 model's Linear layers dynamically to int8."""
    params = load_params(params_file)
    require_backend(params.quantize.backend)
    backend, engine, data = params.quantize.backend, params.engine, read_info(data_dir)
    model, arch = load_fp32(model_file)
    recipe = {"method": "dynamic", "backend": backend, "engine": engine, "per_channel": params.quantize.per_channel}
    if backend in RUNTIMES:
        recipe["engine"] = backend  # the runtime's own int8 kernels, not PyTorch's
    fp32_onnx = onnx_file(model_file)
    if backend == "openvino":
        recipe |= {"per_channel": True, "preset": params.openvino.preset}  # NNCF: a scale per row
        write = partial(openvino_dynamic, fp32_onnx, params.openvino.preset)
        save_runtime_variant(write, OPENVINO_FILE, arch, recipe, out, data)
        return
    if backend == "pt2e":
        recipe["per_channel"] = True  # torchao's int8 weights have a scale per row
    # PyTorch exports no dynamic int8 op to ONNX: the ONNX twin is ONNX Runtime's dynamic int8 of the FP32 graph
    onnx_twin = partial(onnxruntime_dynamic, fp32_onnx, recipe["per_channel"], params.onnxruntime)
    if backend == "onnxruntime":
        save_runtime_variant(onnx_twin, ONNX_FILE, arch, recipe, out, data)
    elif backend == "pt2e":
        from pipeline import pt2e

        save_variant(pt2e.quantize_dynamic(model, arch["input"]), arch, recipe, out, data, onnx_twin)
    else:
        use_engine(engine)
        save_variant(quantize_dynamic(model, recipe["per_channel"]), arch, recipe, out, data, onnx_twin)
