"""Stage `static`: post-training static int8, with layer fusion and calibration on the calibration subset.

python -m pipeline static
"""

from functools import partial
from pathlib import Path

import torch
import typer

from pipeline.checkpoints import load_fp32, onnx_file, save_runtime_variant, save_variant
from pipeline.data import DataInfo, load_split, read_info
from pipeline.errors import PipelineError
from pipeline.mixed_precision import fewest_float_layers, static_recipe
from pipeline.params import PARAMS_FILE, Params, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR
from pipeline.quantize import use_engine
from pipeline.runtime_quantize import onnxruntime_static, openvino_static
from pipeline.runtimes import ONNX_FILE, OPENVINO_FILE, RUNTIMES, require_backend


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to quantize"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding calib.pt and dataset.json"),
    out: Path = typer.Option(INT8_MODELS["static"], "--out", help="folder for the int8 model"),
) -> None:
    """Fuse, calibrate and convert the FP32 model to static int8."""
    params = load_params(params_file)
    require_backend(params.quantize.backend)
    settings, engine, backend = params.static, params.engine, params.quantize.backend
    model, arch = load_fp32(model_file)
    images, labels = load_split(data_dir / "calib.pt")
    use_engine(engine)
    batches = params.calibration.batches
    if batches > len(images):
        raise PipelineError(
            f"calibration.batches: {batches} batches cannot be made of {len(images)} calibration images"
        )
    if backend in RUNTIMES:
        save_runtime_static(params, onnx_file(model_file), images, arch, out, read_info(data_dir))
        return
    conversion = static_recipe(model, params, images)
    skip_layers = list(settings.skip_layers)
    if settings.max_accuracy_drop is not None:
        skip_layers = fewest_float_layers(conversion, labels, skip_layers, settings.max_accuracy_drop)
        typer.echo(f"kept in FP32 to lose at most {settings.max_accuracy_drop} points: {skip_layers or 'none'}")
    int8 = conversion.with_float(skip_layers)
    if backend == "pt2e":
        # Inductor fuses every op with its quantize/dequantize pair and runs only per-channel int8 weights.
        fused, per_channel = True, True
    else:
        fused, per_channel = settings.fuse, params.quantize.per_channel
    recipe = {
        "method": "static",
        "backend": backend,
        "engine": engine,
        "fused": fused,
        "observer": settings.observer,
        "per_channel": per_channel,
        "symmetric_activations": settings.symmetric_activations,
        "skip_layers": skip_layers,
    }
    save_variant(int8, arch, recipe, out, read_info(data_dir))


def save_runtime_static(
    params: Params, fp32_onnx: Path, images: torch.Tensor, arch: dict, out: Path, data: DataInfo
) -> None:
    """Static int8 by the runtime's own quantizer on the FP32 ONNX file, calibrated on the same images."""
    settings, backend = params.static, params.quantize.backend
    if settings.max_accuracy_drop is not None:
        raise PipelineError(
            f"static.max_accuracy_drop: searched with the eager and pt2e backends only; with {backend}, name the "
            "layers to keep in FP32 in static.skip_layers (reports/sensitivity.json ranks them)"
        )
    skip_layers = list(settings.skip_layers)
    recipe = {"method": "static", "backend": backend, "engine": backend, "skip_layers": skip_layers}
    if backend == "onnxruntime":
        recipe |= {
            "observer": settings.observer,
            "per_channel": params.quantize.per_channel,
            "symmetric_activations": settings.symmetric_activations,
            **params.onnxruntime.model_dump(),
        }
        write = partial(
            onnxruntime_static,
            fp32_onnx,
            images,
            params.calibration.batches,
            params.quantize.per_channel,
            settings.observer,
            settings.symmetric_activations,
            skip_layers,
            params.onnxruntime,
        )
        save_runtime_variant(write, ONNX_FILE, arch, recipe, out, data)
    else:
        recipe |= {"observer": "nncf", "per_channel": True, "preset": params.openvino.preset}  # NNCF: per channel
        write = partial(openvino_static, fp32_onnx, images, params.openvino.preset, skip_layers)
        save_runtime_variant(write, OPENVINO_FILE, arch, recipe, out, data)
