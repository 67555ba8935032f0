"""Fetching raw files: local folders first, then HTTP mirrors; every file checked against its MD5."""

import gzip
import hashlib

import pytest

from pipeline.data.fetch import fetch_dataset
from pipeline.data.published import SPLIT_FILES, DataFile, Dataset
from pipeline.errors import PipelineError

FILE_NAMES = [name for pair in SPLIT_FILES.values() for name in pair]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dataset_of(folder, mirrors=(), system_dir=None, **wrong_md5) -> Dataset:
    """A registry entry whose checksums are those of the files in `folder` (or the given wrong ones)."""
    files = tuple(DataFile(name, wrong_md5.get(name.split("-")[0], md5(folder / name))) for name in FILE_NAMES)
    return Dataset("synthetic", files, tuple(mirrors), system_dir)


def test_local_folder_comes_first(raw_dir, tmp_path):
    sources = fetch_dataset(
        dataset_of(raw_dir, mirrors=["http://127.0.0.1:9/"]), tmp_path / "out", raw_dir, verify=True
    )
    assert sources == [str(raw_dir / name) for name in FILE_NAMES]
    assert all(md5(tmp_path / "out" / name) == md5(raw_dir / name) for name in FILE_NAMES)


def test_system_copy_when_no_local_folder(raw_dir, tmp_path):
    sources = fetch_dataset(dataset_of(raw_dir, system_dir=raw_dir), tmp_path / "out", None, verify=True)
    assert sources[0] == str(raw_dir / FILE_NAMES[0])


def test_http_mirror_after_a_dead_one(raw_dir, tmp_path, mirror):
    dead = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    dataset = dataset_of(raw_dir, mirrors=[dead, mirror], system_dir=tmp_path / "no-system-copy")
    sources = fetch_dataset(dataset, tmp_path / "out", None, verify=True)
    assert sources == [mirror + name for name in FILE_NAMES]
    assert all(md5(tmp_path / "out" / name) == md5(raw_dir / name) for name in FILE_NAMES)


def test_http_md5_mismatch_is_reported_and_nothing_kept(raw_dir, tmp_path, mirror):
    dataset = dataset_of(raw_dir, mirrors=[mirror], train="0" * 32)
    with pytest.raises(PipelineError) as error:
        fetch_dataset(dataset, tmp_path / "out", None, verify=True)
    assert "does not match the published 00000000" in str(error.value) and mirror in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_local_md5_mismatch_is_an_error_not_a_fallback(raw_dir, tmp_path, mirror):
    dataset = dataset_of(raw_dir, mirrors=[mirror], train="0" * 32)
    with pytest.raises(PipelineError, match=r"train-images-idx3-ubyte.gz: MD5 \w+ does not match"):
        fetch_dataset(dataset, tmp_path / "out", raw_dir, verify=True)
    assert not (tmp_path / "out" / "train-images-idx3-ubyte.gz").exists()


def test_recompressed_copy_passes_by_content_md5(raw_dir, tmp_path):
    # A distribution may recompress the published files (Debian does): the .gz differs, the IDX bytes do not.
    repacked = tmp_path / "repacked"
    repacked.mkdir()
    for name in FILE_NAMES:
        (repacked / name).write_bytes(
            gzip.compress(gzip.decompress((raw_dir / name).read_bytes()), mtime=0, compresslevel=1)
        )
    files = tuple(
        DataFile(name, md5(raw_dir / name), hashlib.md5(gzip.decompress((raw_dir / name).read_bytes())).hexdigest())
        for name in FILE_NAMES
    )
    fetch_dataset(Dataset("synthetic", files, ()), tmp_path / "out", repacked, verify=True)
    assert all((tmp_path / "out" / name).exists() for name in FILE_NAMES)


def test_nowhere_to_get_it(raw_dir, tmp_path):
    with pytest.raises(PipelineError, match="no mirror gave a valid copy.*set data.local_dir"):
        fetch_dataset(dataset_of(raw_dir, mirrors=["http://127.0.0.1:9/"]), tmp_path / "out", None, verify=True)
    with pytest.raises(PipelineError, match="data.local_dir: folder .* not found"):
        fetch_dataset(dataset_of(raw_dir), tmp_path / "out", tmp_path / "missing", verify=True)
