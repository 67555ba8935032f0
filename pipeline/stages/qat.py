"""Stage `qat`: quantization-aware training, fine-tuning the FP32 weights under fake quantization, then int8.

python -m pipeline qat
"""

from pathlib import Path

import torch
import typer

from pipeline import quantize
from pipeline.checkpoints import load_fp32, save_variant
from pipeline.data import load_split, read_info
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import FP32_MODEL, INT8_MODELS, PREPARED_DIR
from pipeline.quantize import use_engine
from pipeline.runtimes import require_backend
from pipeline.training import fit


def command(
    params_file: ParamsOption = PARAMS_FILE,
    model_file: Path = typer.Option(FP32_MODEL, "--model", help="FP32 checkpoint to start from"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="folder holding train.pt and dataset.json"),
    out: Path = typer.Option(INT8_MODELS["qat"], "--out", help="folder for the int8 model"),
) -> None:
    """Fine-tune the FP32 model with fake quantization, then convert it to int8."""
    params = load_params(params_file)
    require_backend(params.quantize.backend)
    engine, backend = params.engine, params.quantize.backend
    model, arch = load_fp32(model_file)
    images, labels = load_split(data_dir / "train.pt")
    use_engine(engine)
    torch.set_num_threads(params.train.threads)
    settings = params.qat
    if backend == "pt2e":
        from pipeline import pt2e as flow  # torchao takes seconds to import: only where it is used

        prepared = flow.prepare_qat(model, arch["input"])
        per_channel = True  # as for static: Inductor lowers only per-channel weights to int8 kernels
    else:
        flow = quantize
        per_channel = params.quantize.per_channel
        prepared = flow.prepare_qat(model, engine, per_channel)

    def freeze_when_due(epoch: int) -> None:
        if epoch == settings.freeze_after:
            flow.freeze_qat(prepared)
            typer.echo(f"observers and BN statistics frozen after epoch {epoch}")

    # No test split here: evaluating would also feed the fake-quant observers, which stay on in eval mode.
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
    recipe = {
        "method": "qat",
        "backend": backend,
        "engine": engine,
        "fused": True,
        "per_channel": per_channel,
        "freeze_after": settings.freeze_after,
    }
    save_variant(flow.convert_qat(prepared), arch, recipe, out, read_info(data_dir))
