"""Shared fixtures: a small, learnable data set written as the four standard IDX gz files."""

import contextlib
import functools
import os
import struct
import threading
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from moto.server import ThreadedMotoServer
from PIL import Image
from ruamel.yaml import YAML
from typer.testing import CliRunner

from pipeline.__main__ import app
from pipeline.backends.eager.backend import Eager
from pipeline.backends.recipes import Recipe, StaticRecipe
from pipeline.data.idx import write_idx
from pipeline.data.prepared import DataInfo, load_split
from pipeline.data.published import SPLIT_FILES
from pipeline.formats.fp32 import Fp32Model

# One torch thread per process, stage processes included: the suite runs on two workers (pyproject.toml), and with
# a thread per core each, four threads compete for two cores and torch's waiting threads spin. On a 2-core AMD EPYC
# (family 25, model 1), pytest took 333 s with one thread, 377-388 s without.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
# The models of the synthetic IDX data: 28x28 grey images, 10 classes, as MLP(widths, *IDX_SHAPE) or in an arch.
IDX_SHAPE = ([1, 28, 28], 10)
IDX_ARCH = {"input": [1, 28, 28], "classes": 10}
IDX_INFO = DataInfo("synthetic", 1, 28, 28, tuple(str(label) for label in range(10)))


def eager_static_recipe(per_channel: bool = False, observer: str = "minmax") -> StaticRecipe:
    return StaticRecipe("eager", "x86", True, observer, per_channel, False)


def save_eager(int8: torch.nn.Module, arch: dict, recipe: Recipe, folder: Path) -> None:
    """An eager int8 model's folder, as the eager backend writes it: model.pt, model.ts, model.onnx, contract."""
    Eager().save(int8, Fp32Model(int8, arch, folder), recipe, folder, IDX_INFO)


def whole_split(folder: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split read whole, as model inputs and labels: what a test of a few hundred images can afford."""
    images, labels = load_split(folder, name)
    return images[:], labels


def synthetic_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28x28 images whose class is the position of one bright square: easy to learn, never trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, col = 3 + 13 * (label // 5), 1 + 5 * (label % 5)
        image[row : row + 8, col : col + 5] = rng.integers(180, 256)
    return images, labels


def write_dataset(folder: Path, train_count: int = 400, test_count: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for (images_file, labels_file), (count, seed) in zip(SPLIT_FILES.values(), [(train_count, 1), (test_count, 2)]):
        images, labels = synthetic_split(count, seed)
        write_idx(images, folder / images_file)
        write_idx(labels, folder / labels_file)
    return folder


COLOURS = {"blue": 2, "green": 1, "red": 0}  # class name: the channel that is bright in its square


def colour_images(count: int, seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy RGB images (N, 3, size, size) uint8 whose class is the colour of one bright square."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COLOURS), (count,), generator=generator)
    images = torch.randint(0, 80, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    for image, label in zip(images, labels):
        channel = sorted(COLOURS.values())[label]
        image[channel, 2 : size - 2, 2 : size - 2] = 200
    return images, labels


def write_image_folder(root: Path, train_count: int = 90, test_count: int = 45) -> Path:
    """train/ and test/ with a folder of PNG files per class (blue, green, red)."""
    names = sorted(COLOURS)
    for split, (count, seed) in {"train": (train_count, 3), "test": (test_count, 4)}.items():
        images, labels = colour_images(count, seed)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:04d}.png")
    return root


def png_claiming(width: int, height: int) -> bytes:
    """A PNG file that claims width x height pixels and holds almost no data: a decompression bomb, as it looks
    before it is decoded."""
    chunks = [
        b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0),
        b"IDAT" + zlib.compress(b"\0" * 64),
        b"IEND",
    ]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) for chunk in chunks
    )


def write_tensor_files(root: Path, train_count: int = 90, test_count: int = 45) -> Path:
    """train.pt and test.pt of the same colour images, as {"images", "labels", "classes"}."""
    root.mkdir(parents=True, exist_ok=True)
    for split, (count, seed) in {"train": (train_count, 3), "test": (test_count, 4)}.items():
        images, labels = colour_images(count, seed)
        torch.save({"images": images, "labels": labels, "classes": sorted(COLOURS)}, root / f"{split}.pt")
    return root


def tiny_params(local_dir: Path, **overrides) -> dict:
    """The repository's params.yaml, shrunk to seconds: local synthetic data, one epoch, few timing runs."""
    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    params["data"].update(local_dir=str(local_dir), verify_md5=False)
    params["calibration"].update(size=100, batches=2, draws=2)
    params["train"].update(epochs=3, batch_size=32, lr=0.01, device="cpu", threads=1)  # one per process (above)
    params["qat"].update(epochs=1, batch_size=32)
    params["evaluate"].update(batch_sizes=[1, 16], warmup=1, repeats=3)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    return params


def write_params(path: Path, params: dict) -> Path:
    with open(path, "w") as stream:
        YAML(typ="safe").dump(params, stream)
    return path


@pytest.fixture
def raw_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "idx")


@pytest.fixture
def project(tmp_path, raw_dir, monkeypatch) -> Path:
    """An empty working folder with tiny params.yaml, as the stages see the repository root."""
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", tiny_params(raw_dir))
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A project folder where every stage up to the three conversions has run once (shared, read-only for tests)."""
    base = tmp_path_factory.mktemp("trained")
    work = base / "work"
    work.mkdir()
    write_params(work / "params.yaml", tiny_params(write_dataset(base / "idx")))
    with contextlib.chdir(work):
        for stage in ("download", "prepare", "train", "export", "dynamic", "static", "qat"):
            result = CliRunner().invoke(app, [stage])
            assert result.exit_code == 0, result.output
    return work


@pytest.fixture
def mirror(raw_dir):
    """An HTTP server on 127.0.0.1 serving the synthetic IDX files; yields its base URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(raw_dir))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


# The files that take longest, in the order the two xdist workers should start them, longest first, so that the
# short files fill the end of both workers' runs (seconds, in one run of the suite on a 2-core AMD EPYC with AVX2):
# test_own_model 130, test_pipeline 120, test_pt2e 39, test_vit 29, test_interruptions 28, test_runtimes 22, every
# other file 15 or less; test_families, added later, 35 on an Intel Xeon with AVX-512 VNNI, where test_own_model
# took 87 and test_pipeline 93. With test_vit left in its alphabetical place, it ran last on one worker, which finished
# 22 seconds after the other.
FIRST = (
    *("test_own_model.py", "test_pipeline.py", "test_families.py", "test_pt2e.py"),
    *("test_vit.py", "test_interruptions.py", "test_runtimes.py"),
)


def pytest_collection_modifyitems(items):
    """The longest files first, in the order FIRST gives; the others after them, in their own order."""
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1, with the bucket created."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = "http://{}:{}".format(*server.get_host_and_port())
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", **CREDENTIALS).create_bucket(Bucket="quantlab")
    yield url
    server.stop()


CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # credentials never enter a config file
