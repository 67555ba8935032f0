"""Stage `dynamic`: int8 weights for every Linear layer, activations quantized on the fly.

python -m pipeline dynamic
"""

from pathlib import Path

import typer

from pipeline.checkpoints import load_fp32, save_variant
from pipeline.data import read_info
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR
from pipeline.quantize import quantize_dynamic, use_engine


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to quantize"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding dataset.json"),
    out: Path = typer.Option(INT8_MODELS["dynamic"], "--out", help="folder for the int8 model"),
) -> None:
    """Quantize the FP32 model's Linear layers dynamically to int8."""
    params = load_params(params_file)
    backend, engine = params.quantize.backend, params.engine
    model, arch = load_fp32(model_file)
    if backend == "pt2e":
        from pipeline import pt2e

        int8 = pt2e.quantize_dynamic(model, arch["input"])
        per_channel = True  # torchao's int8 weights have a scale per row
    else:
        use_engine(engine)
        per_channel = params.quantize.per_channel
        int8 = quantize_dynamic(model, per_channel)
    recipe = {"method": "dynamic", "backend": backend, "engine": engine, "per_channel": per_channel}
    save_variant(int8, arch, recipe, out, read_info(data_dir))
