"""The IDX data sets `data.dataset` names: their files, published MD5s, mirrors and class names.

Files, MD5s, mirrors and class names are torchvision's own lists, so they stay as torchvision keeps them.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

# The four files of every IDX data set, per split: (images, labels).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class DataFile:
    name: str
    md5: str  # of the .gz file as published
    content_md5: str | None = None  # of the decompressed bytes, which survive recompression by a distribution


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]
    system_dir: Path | None = None
    classes: tuple[str, ...] = ()


# Debian recompresses Fashion-MNIST (new gzip header), so its .gz MD5s differ from the published ones while the
# IDX bytes inside are the same. These are the MD5s of those IDX bytes.
FASHION_CONTENT_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}


@functools.cache
def registry() -> dict[str, Dataset]:
    """Every known IDX data set, keyed by the name `data.dataset` takes."""
    # Imported here: torchvision takes seconds to import, and only the data stages need it.
    from torchvision.datasets import MNIST, FashionMNIST

    return {
        "fashion-mnist": Dataset(
            "fashion-mnist",
            tuple(DataFile(name, md5, FASHION_CONTENT_MD5[name]) for name, md5 in FashionMNIST.resources),
            tuple(FashionMNIST.mirrors),
            Path("/usr/share/datasets/fashion-mnist"),
            tuple(FashionMNIST.classes),
        ),
        "mnist": Dataset(
            "mnist",
            tuple(DataFile(name, md5) for name, md5 in MNIST.resources),
            tuple(MNIST.mirrors),
            classes=tuple(MNIST.classes),
        ),
    }
