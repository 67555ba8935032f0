"""Stage `prepare`: decode the data once, a batch at a time: train, test, and a calibration subset.

    python -m pipeline prepare

Reads data/raw/<dataset>/ (`pipeline.data.sources`: the four IDX files, an image folder, or tensor files), every
image converted to `data.channels` and brought to `data.image_size` where these are set, and writes each split to
data/prepared/<split>/ (`pipeline.data.prepared`): uint8 pixels where the source is 8-bit, a batch at a time, so
that memory does not grow with the number of images. `data.test_images` keeps a subset of the test split, drawn by
seed, and only those images are decoded. Beside them, dataset.json records the image size, the class names, the
preprocessing and the normalization. Everything is written into a new folder that replaces the old one whole.
"""

from pathlib import Path

import torch
import typer

from pipeline.data.prepared import draw_calibration, drawn_in_order, load_split, write_info, write_split
from pipeline.data.sources import check_labels, describe, read_source
from pipeline.errors import PipelineError
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import PREPARED_DIR, RAW_DIR
from pipeline.safe_io import atomic_dir

DECODE_BATCH = 256  # images decoded and written at once: 38 MB of 224x224 RGB pixels


def command(
    params_file: ParamsOption = PARAMS_FILE,
    raw_dir: Path = typer.Option(RAW_DIR, "--raw", help="folder holding <dataset>/"),
    out_dir: Path = typer.Option(PREPARED_DIR, "--out", help="folder for train/, test/, calib/ and dataset.json"),
) -> None:
    """Decode the raw data into train, test and calibration splits and describe them."""
    params = load_params(params_file)
    source = raw_dir / params.data.dataset
    splits, classes = read_source(source, params.data)
    check_labels(splits, classes, source)
    train_count, test_count = (len(splits[name].labels) for name in ("train", "test"))
    calibration_rows = draw_calibration(train_count, params.calibration.size, params.seed)
    rows = {"train": torch.arange(train_count), "test": test_rows(test_count, params.data.test_images, params.seed)}
    # The first image of each split tells the shapes, checked before the rest are decoded; then every image is.
    shapes = {name: list(split.read(rows[name][:1]).shape[1:]) for name, split in splits.items()}
    info = describe(shapes, classes, params.data, source)
    with atomic_dir(out_dir) as folder:
        for name, split in splits.items():
            write_split(folder / name, split.batches(rows[name], DECODE_BATCH), split.labels[rows[name]], name)
        write_info(info, folder)
        train, labels = load_split(folder, "train")
        pixels = (train.pixels(batch) for batch in calibration_rows.split(DECODE_BATCH))
        write_split(folder / "calib", pixels, labels[calibration_rows], "calib")
    for name, count in (("train", train_count), ("test", len(rows["test"])), ("calib", len(calibration_rows))):
        typer.echo(f"{name}: {count} images")


def test_rows(count: int, size: int | None, seed: int) -> torch.Tensor:
    """The test images kept: all, or `size` drawn by seed, in their order in the source."""
    if size is None:
        return torch.arange(count)
    if size > count:
        raise PipelineError(f"data.test_images: {size} is more than the {count} test images")
    return drawn_in_order(count, size, seed)
