"""The image-folder source (`data.dataset: imagefolder`): train/ and test/, each holding one folder of PNG or JPEG
files per class, the layout of torchvision's ImageFolder. Class names and their order (sorted by name, as
ImageFolder sorts them) come from the folders, and train and test must name the same classes.
"""

from pathlib import Path

import torch

from pipeline.data.decode import IMAGE_SUFFIXES, Preprocessing, SourceSplit, read_image, stack
from pipeline.errors import PipelineError

SPLITS = ("train", "test")


def class_folders(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        raise PipelineError(
            f"{split_dir}: folder not found (an image folder holds train/ and test/, a folder per class)"
        )
    folders = sorted(path for path in split_dir.iterdir() if path.is_dir())
    if not folders:
        raise PipelineError(f"{split_dir}: holds no class folders")
    return folders


def class_names(root: Path) -> tuple[str, ...]:
    """The class names train/ and test/ share, sorted; naming different classes is an error that lists them."""
    train, test = ([folder.name for folder in class_folders(root / split)] for split in SPLITS)
    if train != test:
        only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise PipelineError(
            f"{root}: train and test name different classes (only in train: {only_train or 'none'}; "
            f"only in test: {only_test or 'none'})"
        )
    return tuple(train)


def image_files(class_dir: Path) -> list[Path]:
    files = sorted(path for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PipelineError(f"{class_dir}: class folder holds no PNG or JPEG image")
    return files


class ImageFiles:
    """Rows of a split's image files, decoded when asked for; each must have the shape of the first decoded."""

    def __init__(self, paths: list[Path], preprocessing: Preprocessing):
        self.paths, self.preprocessing, self.first = paths, preprocessing, None

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        paths = [self.paths[row] for row in rows.tolist()]
        images = [read_image(path, self.preprocessing) for path in paths]
        self.first = self.first or (paths[0], images[0].shape)
        return stack(images, paths, *self.first)


def read_split(split_dir: Path, classes: tuple[str, ...], preprocessing: Preprocessing) -> SourceSplit:
    """One split's labels, in the order of `classes`, and its files, decoded when read."""
    labelled = [(path, label) for label, name in enumerate(classes) for path in image_files(split_dir / name)]
    labels = torch.tensor([label for _, label in labelled])
    return SourceSplit(labels, ImageFiles([path for path, _ in labelled], preprocessing))


def read_image_folder(root: Path, preprocessing: Preprocessing) -> tuple[dict, tuple[str, ...]]:
    """The train and test splits of an image folder, and its class names."""
    classes = class_names(root)
    return {split: read_split(root / split, classes, preprocessing) for split in SPLITS}, classes
