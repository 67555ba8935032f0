"""Stage `dynamic`: int8 weights for every Linear layer, activations quantized on the fly.

python -m pipeline dynamic
"""

from pathlib import Path

import typer

from pipeline.checkpoints import FP32_MODEL, INT8_MODELS, load_fp32, save_int8
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.quantize import quantize_dynamic, use_engine


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to quantize"),
    out: Path = typer.Option(INT8_MODELS["dynamic"], "--out", help="int8 model to write"),
) -> None:
    """Quantize the FP32 model's Linear layers dynamically to int8."""
    engine = load_params(params_file).quantize.engine
    model, arch = load_fp32(model_file)
    use_engine(engine)
    save_int8(quantize_dynamic(model), arch, {"method": "dynamic", "engine": engine}, out)
