"""Stage `dynamic`: int8 weights for every Linear layer, activations quantized on the fly.

python -m pipeline dynamic
"""

from pathlib import Path

import typer

from pipeline.backends.registry import planned
from pipeline.data.prepared import read_info
from pipeline.formats.fp32 import read_fp32
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 model folder to quantize"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding dataset.json"),
    out: Path = typer.Option(INT8_MODELS["dynamic"], "--out", help="folder for the int8 model"),
) -> None:
    """Quantize the FP32 model's Linear layers dynamically to int8."""
    backend, recipe = planned(load_params(params_file), "dynamic")
    backend.dynamic(read_fp32(model_file), recipe, out, read_info(data_dir))
