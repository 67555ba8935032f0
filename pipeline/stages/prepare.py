"""Stage `prepare`: decode the data once into tensors: train, test, and a calibration subset.

    python -m pipeline prepare

Reads data/raw/<dataset>/ (`pipeline.data.sources`: the four IDX files, an image folder, or tensor files), every
image converted to `data.channels` and resized to `data.image_size` where these are set. Images stay uint8 on disk
where the source is 8-bit (a quarter of the float size); `pipeline.data.prepared.load_split` makes model inputs of
them. Beside them, dataset.json records the image size, the class names and the normalization.
"""

from pathlib import Path

import typer

from pipeline.data.prepared import draw_calibration, write_info
from pipeline.data.sources import describe, read_source, stored
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import PREPARED_DIR, RAW_DIR
from pipeline.safe_io import save_torch


def command(
    params_file: ParamsOption = PARAMS_FILE,
    raw_dir: Path = typer.Option(RAW_DIR, "--raw", help="folder holding <dataset>/"),
    out_dir: Path = typer.Option(PREPARED_DIR, "--out", help="folder for train/test/calib.pt and dataset.json"),
) -> None:
    """Decode the raw data into train, test and calibration tensors and describe them."""
    params = load_params(params_file)
    source = raw_dir / params.data.dataset
    splits, classes = read_source(source, params.data)
    info = describe(splits, classes, params.data, source)
    splits = {name: stored(split) for name, split in splits.items()}
    splits["calib"] = draw_calibration(splits["train"], params.calibration.size, params.seed)
    for name, split in splits.items():  # written only once everything has parsed
        save_torch(split, out_dir / f"{name}.pt")
        typer.echo(f"{name}: {len(split['labels'])} images")
    write_info(info, out_dir)
