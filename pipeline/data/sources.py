"""The splits a data source holds: the published IDX sets, an image folder or tensor files, each brought to
`data.channels` and `data.image_size` where these are set, and described (`DataInfo`) for the models built on them.
A split's labels are known at once; its images are decoded only when `prepare` asks for some rows, a batch at a
time, and written to the prepared data (`pipeline.data.prepared`).
"""

from pathlib import Path

import torch

from pipeline.data.decode import Preprocessing, SourceSplit, in_memory
from pipeline.data.idx import read_idx
from pipeline.data.image_folder import read_image_folder
from pipeline.data.prepared import DataInfo
from pipeline.data.published import SPLIT_FILES, registry
from pipeline.data.tensor_files import read_tensor_files
from pipeline.errors import PipelineError
from pipeline.params import DataParams


def read_split(raw_dir: Path, images_file: str, labels_file: str, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 of an IDX pair, checked against each other."""
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
    return images.unsqueeze(1), labels.long()


def read_idx_dataset(raw_dir: Path, name: str, preprocessing: Preprocessing) -> tuple[dict, tuple[str, ...]]:
    classes = registry()[name].classes
    splits = {split: read_split(raw_dir, *files, len(classes)) for split, files in SPLIT_FILES.items()}
    return {split: in_memory(*pair, preprocessing) for split, pair in splits.items()}, classes


def preprocessing_of(data: DataParams) -> Preprocessing:
    """The data section's channels and size, as every image is brought to them."""
    if data.resize is not None and data.image_size is None:
        raise PipelineError(
            "data.resize: the shorter side is resized before a centre crop to data.image_size; set both"
        )
    if data.resize is not None and data.resize < max(data.image_size):
        raise PipelineError(
            f"data.resize: {data.resize} pixels cannot be cropped to data.image_size {data.image_size}; use at least "
            f"{max(data.image_size)}"
        )
    return Preprocessing(data.channels, tuple(data.image_size) if data.image_size else None, data.resize)


def read_source(raw_dir: Path, data: DataParams) -> tuple[dict[str, SourceSplit], tuple[str, ...]]:
    """The train and test splits and the class names, from whichever source data.dataset is."""
    preprocessing = preprocessing_of(data)
    if data.dataset == "imagefolder":
        return read_image_folder(raw_dir, preprocessing)
    if data.dataset == "tensors":
        return read_tensor_files(raw_dir, preprocessing)
    return read_idx_dataset(raw_dir, data.dataset, preprocessing)


def describe(shapes: dict[str, list[int]], classes: tuple[str, ...], data: DataParams, source: Path) -> DataInfo:
    """What the models will be built for: the splits' common image shape, the classes, the normalization."""
    if shapes["train"] != shapes["test"]:
        raise PipelineError(f"{source}: train images are {shapes['train']} but test images {shapes['test']}")
    channels, height, width = shapes["train"]
    if (data.mean is None) != (data.std is None):
        raise PipelineError("data.mean and data.std: set both or neither")
    if data.mean is not None and not len(data.mean) == len(data.std) == channels:
        raise PipelineError(f"data.mean and data.std: need {channels} values each, one per channel of the images")
    mean, std = (tuple(values) if values is not None else None for values in (data.mean, data.std))
    return DataInfo(data.dataset, channels, height, width, classes, mean, std, data.resize)


def check_labels(splits: dict[str, SourceSplit], classes: tuple[str, ...], source: Path) -> None:
    for name, split in splits.items():
        if split.labels.max() >= len(classes):
            raise PipelineError(f"{source}: {name} has label {int(split.labels.max())} for {len(classes)} classes")
