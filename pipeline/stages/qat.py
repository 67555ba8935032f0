"""Stage `qat`: quantization-aware training, fine-tuning the FP32 weights under fake quantization, then int8.

python -m pipeline qat
"""

from pathlib import Path

import torch
import typer

from pipeline.backends.registry import planned
from pipeline.data.prepared import load_split, read_info
from pipeline.formats.fp32 import read_fp32
from pipeline.formats.variants import save_left_out
from pipeline.models.training import fit
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to start from"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    out: Path = typer.Option(INT8_MODELS["qat"], "--out", help="folder for the int8 model"),
) -> None:
    """Fine-tune the FP32 model with fake quantization, then convert it to int8."""
    params = load_params(params_file)
    if params.qat.epochs == 0:
        save_left_out("not made: qat.epochs is 0", out)
        typer.echo("qat: left out (qat.epochs is 0)")
        return
    backend, recipe = planned(params, "qat")
    fp32 = read_fp32(model_file)
    images, labels = load_split(data_dir, "train")
    torch.set_num_threads(params.train.threads)
    prepared = backend.prepare_qat(fp32, recipe)

    def freeze_when_due(epoch: int) -> None:
        if epoch == recipe.freeze_after:
            backend.freeze_qat(prepared)
            typer.echo(f"observers and BN statistics frozen after epoch {epoch}")

    # No test split here: evaluating would also feed the fake-quant observers, which stay on in eval mode.
    settings = params.qat
    fit(
        prepared,
        images,
        labels,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=params.seed,
        schedule=settings.lr_schedule,
        after_epoch=freeze_when_due,
    )
    backend.save_qat(prepared, fp32, recipe, out, read_info(data_dir))
