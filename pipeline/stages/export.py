"""Stage `export`: the FP32 model's deployable files (TorchScript, ONNX) and input contract, beside its file.

python -m pipeline export
"""

from pathlib import Path

import typer

from pipeline.data.prepared import read_info
from pipeline.formats.fp32_export import export_fp32
from pipeline.paths import FP32_MODEL, PREPARED_DIR, TRAINED_MODEL


def command(
    trained: Path = typer.Option(TRAINED_MODEL, "--model", help="folder holding the FP32 model's file (train)"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding dataset.json, for the input contract"),
    out: Path = typer.Option(FP32_MODEL, "--out", help="folder for the FP32 model and its deployable files"),
) -> None:
    """Export the FP32 model to TorchScript and ONNX, beside its file."""
    export_fp32(trained, out, read_info(data_dir))
