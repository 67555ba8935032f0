"""Stage `train`: the FP32 model, with Adam, from the prepared training split, starting from `train.weights` where
set (`train.epochs: 0` adopts those weights as they are), or your exported model adopted.

python -m pipeline train
"""

from pathlib import Path

import torch
import typer

from pipeline.data.prepared import load_split, read_info
from pipeline.formats.fp32 import save_trained
from pipeline.models.architectures import accuracy, architecture, build
from pipeline.models.exported import adopt
from pipeline.models.pretrained import load_pretrained
from pipeline.models.training import fit, pick_device
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import OWN_MODEL, PLOTS_DIR, PREPARED_DIR, TRAINED_MODEL, TRAINING_PLOT
from pipeline.safe_io import save_json


def command(
    params_file: ParamsOption = PARAMS_FILE,
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    out: Path = typer.Option(TRAINED_MODEL, "--out", help="folder for the FP32 model's file"),
    own_model: Path = typer.Option(OWN_MODEL, "--own", help="your exported model, for train.arch: exported"),
    history_out: Path = typer.Option(PLOTS_DIR / TRAINING_PLOT, "--history", help="per-epoch loss and accuracy (JSON)"),
) -> None:
    """Train the FP32 model, or adopt your exported one."""
    params = load_params(params_file)
    device = pick_device(params.train.device)
    torch.set_num_threads(params.train.threads)
    images, labels = load_split(data_dir, "train")
    test = load_split(data_dir, "test")
    torch.manual_seed(params.seed)
    data = read_info(data_dir)
    if params.train.arch == "exported":
        program, arch = adopt(own_model, data, test[0])
        typer.echo(f"adopted {own_model}: test accuracy {accuracy(program.module(), *test):.4f}")
        save_trained(program, arch, out)
        save_json([], history_out)  # no training, no history
        return
    arch = architecture(params.train, data)
    model = build(arch)
    if params.train.weights is not None:
        load_pretrained(model, Path(params.train.weights))
    history = []
    if params.train.epochs:
        history = fit(
            model,
            images,
            labels,
            epochs=params.train.epochs,
            batch_size=params.train.batch_size,
            lr=params.train.lr,
            seed=params.seed,
            schedule=params.train.lr_schedule,
            device=device,
            test=test,
        )
    else:
        typer.echo(f"adopted without training: test accuracy {accuracy(model.eval(), *test):.4f}")
    save_trained(model, arch, out)
    save_json(history, history_out)
