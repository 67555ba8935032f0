"""Stage `prepare`: parse the IDX files once into tensors: train, test, and a calibration subset.

    python -m pipeline prepare

Images stay uint8 on disk (a quarter of the float size) and become floats in [0, 1] when a stage loads them.
"""

from pathlib import Path

import torch
import typer

from pipeline.artifacts import load_torch, save_torch
from pipeline.download import RAW_DIR
from pipeline.errors import PipelineError
from pipeline.idx import read_idx
from pipeline.params import PARAMS_FILE, ParamsOption, load_params

PREPARED_DIR = Path("data/prepared")
IMAGE_SIDE = 28
NUM_CLASSES = 10
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_split(raw_dir: Path, images_file: str, labels_file: str) -> dict[str, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64, checked against each other."""
    images = read_idx(raw_dir / images_file, ndim=3)
    labels = read_idx(raw_dir / labels_file, ndim=1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise PipelineError(f"{raw_dir / images_file}: expected 28x28 images, found {tuple(images.shape[1:])}")
    if len(images) != len(labels):
        raise PipelineError(
            f"{raw_dir}: {len(images)} images in {images_file} but {len(labels)} labels in {labels_file}"
        )
    if len(labels) == 0:
        raise PipelineError(f"{raw_dir / labels_file}: holds no examples")
    if labels.max() >= NUM_CLASSES:
        raise PipelineError(f"{raw_dir / labels_file}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")
    return {"images": images, "labels": labels.long()}


def draw_calibration(train: dict[str, torch.Tensor], size: int, seed: int) -> dict[str, torch.Tensor]:
    """A fixed random subset of the training split, the same for every run with the same seed."""
    if size > len(train["labels"]):
        raise PipelineError(f"calibration.size: {size} is more than the {len(train['labels'])} training images")
    index = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))[:size]
    return {name: tensor[index] for name, tensor in train.items()}


def load_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split as model inputs: float images (N, 1, 28, 28) in [0, 1] and int64 labels."""
    split = load_torch(path)
    images, labels = split.get("images"), split.get("labels")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or images.dtype != torch.uint8:
        raise PipelineError(f"{path}: not a prepared split (expected uint8 'images' and 'labels' tensors)")
    if len(images) == 0 or len(images) != len(labels):
        raise PipelineError(f"{path}: {len(images)} images and {len(labels)} labels; expected equal and non-zero")
    return images.unsqueeze(1).float().div(255), labels


def command(
    params_file: ParamsOption = PARAMS_FILE,
    raw_dir: Path = typer.Option(RAW_DIR, "--raw", help="folder holding <dataset>/*.gz"),
    out_dir: Path = typer.Option(PREPARED_DIR, "--out", help="folder that receives train/test/calib.pt"),
) -> None:
    """Parse the raw IDX files into train, test and calibration tensors."""
    params = load_params(params_file)
    dataset_dir = raw_dir / params.data.dataset
    splits = {name: read_split(dataset_dir, *files) for name, files in SPLIT_FILES.items()}
    splits["calib"] = draw_calibration(splits["train"], params.calibration.size, params.seed)
    for name, split in splits.items():  # written only once everything has parsed
        save_torch(split, out_dir / f"{name}.pt")
        typer.echo(f"{name}: {len(split['labels'])} images")
