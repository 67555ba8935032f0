"""A full disk, as a file-size limit (RLIMIT_FSIZE) makes one: each stage that writes says in one line which file it
could not write, exits 1, and leaves what it would have replaced as it was, with nothing half-written beside it."""

import contextlib
import re
import resource
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_image_folder, write_params
from tests.test_cli import assert_clean_failure, run
from tests.test_own_data import own_params


@contextlib.contextmanager
def file_size_limit(limit: int):
    """No file of this process may grow past `limit` bytes: a write beyond it fails with EFBIG (Python ignores the
    SIGXFSZ that would otherwise end the process), as a write to a full disk fails with ENOSPC."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, temporary ones included, and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    "stage, limit, unwritten",
    [
        ("download", 2_000, r"data/raw/fashion-mnist/t\w+-images-idx3-ubyte\.gz"),
        ("prepare", 20_000, r"data/prepared/\w+/images\.npy"),
        ("static", 2_000, r"models/int8_static/model\.\w+"),
        ("draws", 50, r"reports/\S+\.json"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_file_and_the_old_outputs_stay(trained, tmp_path, stage, limit, unwritten):
    work = shutil.copytree(trained, tmp_path / "work")
    before = files_of(work)
    with contextlib.chdir(work), file_size_limit(limit):
        result = run(stage)
    assert_clean_failure(result, ": cannot be written (File too large); what was there is kept")
    assert re.fullmatch(rf"error: {unwritten}: cannot be written .*\n", result.output), result.output
    assert files_of(work) == before


def test_your_images_on_a_full_disk_are_not_half_copied(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", own_params(write_image_folder(tmp_path / "source"), "imagefolder"))
    assert run("download").exit_code == 0
    before = files_of(tmp_path / "data")
    for image in (tmp_path / "source/train/red").iterdir():  # the copy now holds images larger than the limit
        image.write_bytes(image.read_bytes() + bytes(4_000))
    with file_size_limit(2_000):
        result = run("download")
    assert_clean_failure(result, ": cannot be written (File too large); what was there is kept")
    assert re.fullmatch(r"error: data/raw/imagefolder/train/red/\d+\.png: cannot be written .*\n", result.output)
    assert files_of(tmp_path / "data") == before
