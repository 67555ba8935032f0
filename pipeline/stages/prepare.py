"""Stage `prepare`: parse the IDX files once into tensors: train, test, and a calibration subset.

    python -m pipeline prepare

Images stay uint8 on disk (a quarter of the float size) and become floats in [0, 1] when a stage loads them
(`pipeline.data.load_split`). Beside them, dataset.json records the image size and the class names.
"""

from pathlib import Path

import torch
import typer

from pipeline.artifacts import save_torch
from pipeline.data import DataInfo, write_info
from pipeline.datasets import SPLIT_FILES, registry
from pipeline.errors import PipelineError
from pipeline.idx import read_idx
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import PREPARED_DIR, RAW_DIR


def read_split(raw_dir: Path, images_file: str, labels_file: str, classes: int) -> dict[str, torch.Tensor]:
    """Images (N, H, W) uint8 and labels (N,) int64, checked against each other."""
    images = read_idx(raw_dir / images_file, ndim=3)
    labels = read_idx(raw_dir / labels_file, ndim=1)
    if len(images) != len(labels):
        raise PipelineError(
            f"{raw_dir}: {len(images)} images in {images_file} but {len(labels)} labels in {labels_file}"
        )
    if len(labels) == 0:
        raise PipelineError(f"{raw_dir / labels_file}: holds no examples")
    if labels.max() >= classes:
        raise PipelineError(f"{raw_dir / labels_file}: label {int(labels.max())} is outside 0..{classes - 1}")
    return {"images": images, "labels": labels.long()}


def same_image_size(splits: dict[str, dict], raw_dir: Path) -> tuple[int, int]:
    sizes = {name: tuple(split["images"].shape[1:]) for name, split in splits.items()}
    if len(set(sizes.values())) > 1:
        raise PipelineError(f"{raw_dir}: the splits' images differ in size: {sizes}")
    return next(iter(sizes.values()))


def draw_calibration(train: dict[str, torch.Tensor], size: int, seed: int) -> dict[str, torch.Tensor]:
    """A fixed random subset of the training split, the same for every run with the same seed."""
    if size > len(train["labels"]):
        raise PipelineError(f"calibration.size: {size} is more than the {len(train['labels'])} training images")
    index = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))[:size]
    return {name: tensor[index] for name, tensor in train.items()}


def command(
    params_file: ParamsOption = PARAMS_FILE,
    raw_dir: Path = typer.Option(RAW_DIR, "--raw", help="folder holding <dataset>/*.gz"),
    out_dir: Path = typer.Option(PREPARED_DIR, "--out", help="folder for train/test/calib.pt and dataset.json"),
) -> None:
    """Parse the raw IDX files into train, test and calibration tensors."""
    params = load_params(params_file)
    dataset = registry()[params.data.dataset]
    dataset_dir = raw_dir / dataset.name
    splits = {name: read_split(dataset_dir, *files, len(dataset.classes)) for name, files in SPLIT_FILES.items()}
    height, width = same_image_size(splits, dataset_dir)
    splits["calib"] = draw_calibration(splits["train"], params.calibration.size, params.seed)
    for name, split in splits.items():  # written only once everything has parsed
        save_torch(split, out_dir / f"{name}.pt")
        typer.echo(f"{name}: {len(split['labels'])} images")
    write_info(DataInfo(dataset.name, 1, height, width, dataset.classes), out_dir)
