"""Your own data: an image folder or tensor files, through download and prepare. The real `dvc repro` of an image
folder, and `predict` on its files, are test_own_model's, with the exported model."""

import numpy
import pytest
import torch
from PIL import Image

from pipeline.data.decode import Preprocessing, read_image
from pipeline.data.prepared import load_split, read_info
from tests.conftest import png_claiming, tiny_params, write_image_folder, write_params, write_tensor_files
from tests.test_cli import assert_clean_failure, run

OWN = {"imagefolder": write_image_folder, "tensors": write_tensor_files}


def own_params(source, dataset, **overrides):
    return tiny_params(source, **{"data.dataset": dataset, "calibration.size": 60, **overrides})


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A working folder and a function that writes params.yaml for an own-data source."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return lambda source, dataset, **overrides: write_params(
        work / "params.yaml", own_params(source, dataset, **overrides)
    )


@pytest.mark.parametrize("dataset", sorted(OWN))
def test_prepare_describes_the_data(own, tmp_path, dataset):
    own(OWN[dataset](tmp_path / "source"), dataset)
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    info = read_info(tmp_path / "work/data/prepared")
    assert (info.dataset, info.input_shape, info.classes) == (dataset, [3, 12, 12], ("blue", "green", "red"))
    images, labels = load_split(tmp_path / "work/data/prepared", "train")
    assert images.shape == (90, 3, 12, 12) and images[:].max() <= 1 and set(labels.tolist()) == {0, 1, 2}


def test_channels_size_and_normalization_are_applied_and_recorded(own, tmp_path):
    own(
        write_image_folder(tmp_path / "source"),
        "imagefolder",
        **{"data.channels": 1, "data.image_size": [8, 6], "data.mean": [0.5], "data.std": [0.25]},
    )
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    prepared = tmp_path / "work/data/prepared"
    stored = torch.from_numpy(numpy.load(prepared / "test/images.npy"))
    assert stored.dtype == torch.uint8 and stored.shape == (45, 1, 8, 6)
    info = read_info(prepared)
    assert (info.input_shape, info.mean, info.std) == ([1, 8, 6], (0.5,), (0.25,))
    images, _ = load_split(prepared, "test")
    assert torch.allclose(images[:], (stored.float() / 255 - 0.5) / 0.25)


def test_the_shorter_side_is_resized_then_the_centre_cropped_as_torchvision_does(own, tmp_path):
    """`data.resize` with `data.image_size`: torchvision's Resize(shorter side) then CenterCrop, the preprocessing
    of its weights' transforms(), on each image as decoded; recorded in dataset.json, from which `predict` and every
    input contract take it."""
    from torchvision.transforms import v2

    source = write_image_folder(tmp_path / "source")
    for path in sorted(source.rglob("*.png")):  # 12x12 images made 12 high and 20 wide: the crop must take the centre
        pixels = numpy.asarray(Image.open(path))
        Image.fromarray(numpy.concatenate([pixels, pixels[:, :8] // 2], axis=1)).save(path)
    own(source, "imagefolder", **{"data.image_size": [8, 8], "data.resize": 10})
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    prepared = tmp_path / "work/data/prepared"
    stored = torch.from_numpy(numpy.load(prepared / "test/images.npy"))
    first = sorted((source / "test").rglob("*.png"))[0]
    expected = v2.Compose([v2.Resize(10, antialias=True), v2.CenterCrop(8)])(read_image(first, Preprocessing()))
    assert stored.shape == (45, 3, 8, 8) and torch.equal(stored[0], expected)
    assert read_info(prepared).resize == 10
    own(source, "imagefolder", **{"data.image_size": [8, 8], "data.resize": 6})
    assert_clean_failure(run("prepare"), "data.resize: 6 pixels cannot be cropped to data.image_size [8, 8]")


@pytest.mark.parametrize("channels", [1, 3])
def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped(tmp_path, channels):
    wide = numpy.arange(0, 65536, 257, dtype=numpy.uint16).reshape(16, 16)  # 0, 257, ..., 65535: 8-bit 0 to 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode == "I;16"
    pixels = read_image(tmp_path / "wide.png", Preprocessing(channels=channels))
    assert pixels.shape == (channels, 16, 16) and torch.equal(pixels[-1], torch.arange(256).reshape(16, 16).byte())


def damage_classes(source):
    (source / "test/red").rename(source / "test/crimson")


def empty_class(source):
    (source / "train/yellow").mkdir()
    (source / "test/yellow").mkdir()


def truncate_image(source):
    image = source / "train/green/0000.png"
    image.write_bytes(image.read_bytes()[:60])


def odd_size(source):
    Image.new("RGB", (10, 12)).save(source / "train/blue/odd.png")


def bomb(source):
    (source / "train/green/bomb.png").write_bytes(png_claiming(20_000, 20_000))


@pytest.mark.parametrize(
    "damage, message",
    [
        (bomb, "train/green/bomb.png: more than 67,108,864 pixels, which is more than an image may have"),
        (odd_size, "train/blue/odd.png: image of [3, 12, 10] (channels, height, width), but 0003.png is [3, 12, 12]"),
        (damage_classes, "train and test name different classes (only in train: ['red']; only in test: ['crimson'])"),
        (empty_class, "train/yellow: class folder holds no PNG or JPEG image"),
        (truncate_image, "imagefolder/train/green/0000.png: not a readable PNG or JPEG image, truncated or corrupt"),
    ],
)
def test_bad_image_folder_is_named_and_nothing_written(own, tmp_path, damage, message):
    source = write_image_folder(tmp_path / "source")
    damage(source)
    own(source, "imagefolder")
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), message)
    assert not (tmp_path / "work/data/prepared").exists()


def linked_class(source, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (source / "train/evil").symlink_to(tmp_path / "elsewhere")
    return "train/evil"


def linked_image(source, tmp_path):
    (source / "train/red/evil.png").symlink_to("/etc/passwd")
    return "train/red/evil.png"


def linked_tensors(source, tmp_path):
    (source / "train.pt").rename(tmp_path / "train.pt")
    (source / "train.pt").symlink_to(tmp_path / "train.pt")
    return "train.pt"


@pytest.mark.parametrize("link", [linked_class, linked_image, linked_tensors])
def test_a_symbolic_link_in_your_data_is_refused(own, tmp_path, link):
    """What download copies is cached and pushed: a link out of data.local_dir must not carry a file along."""
    dataset = "tensors" if link is linked_tensors else "imagefolder"
    source = OWN[dataset](tmp_path / "source")
    where = link(source, tmp_path)
    own(source, dataset)
    assert_clean_failure(run("download"), f"{source / where}: a symbolic link; data.local_dir must hold your data")
    assert not (tmp_path / "work/data").exists()


def test_files_that_are_not_images_are_left_out_and_counted(own, tmp_path):
    source = write_image_folder(tmp_path / "source")
    (source / "train/red/notes.txt").write_text("not an image")
    (source / "test/.DS_Store").write_bytes(b"\0")
    own(source, "imagefolder")
    result = run("download")
    assert result.exit_code == 0 and "left out 2 files that are not PNG or JPEG images" in result.output
    copied = sorted(path.name for path in (tmp_path / "work/data/raw/imagefolder").rglob("*") if path.is_file())
    assert copied == sorted(path.name for path in source.rglob("*.png"))


class Planted:
    """A class that unpickling would have to import: what `weights_only` refuses."""


@pytest.mark.parametrize(
    "content, message",
    [
        ({"images": [[0, 1]], "labels": torch.zeros(1, dtype=torch.long)}, "'images' must be a uint8 or float"),
        ({"images": torch.zeros(2, 3, 4, 4), "labels": torch.zeros(2)}, "'labels' must be an int64 tensor of 2"),
        ({"images": Planted(), "labels": None}, "refused to load: it needs full unpickling"),
        (
            {
                "images": torch.zeros(2, 3, 4, 4).index_fill_(0, torch.tensor([1]), float("nan")),
                "labels": torch.zeros(2, dtype=torch.long),
            },
            "1 of the 2 images hold NaN or infinite values",
        ),
    ],
)
def test_tensor_file_with_anything_but_tensors_is_refused(own, tmp_path, content, message):
    source = write_tensor_files(tmp_path / "source")
    torch.save(content, source / "train.pt")
    own(source, "tensors")
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), f"train.pt: {message}")
    assert not (tmp_path / "work/data/prepared").exists()


def test_normalization_must_fit_the_channels(own, tmp_path):
    own(write_image_folder(tmp_path / "source"), "imagefolder", **{"data.mean": [0.5], "data.std": [0.25]})
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), "data.mean and data.std: need 3 values each, one per channel")


def test_missing_source_folder_is_named(own, tmp_path):
    own(tmp_path / "nowhere", "imagefolder")
    assert_clean_failure(run("download"), f"data.local_dir: {tmp_path / 'nowhere'} holds no train or test")
