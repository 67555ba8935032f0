"""Fetching the raw data `download` stores: the four IDX gz files of a published data set, verified, and your own
data copied from a folder.

IDX sources, tried per file in order: the folder `data.local_dir`, the system copy (Debian's package
dataset-fashion-mnist), then the official mirrors that torchvision lists. A file found locally that fails its
checksum is an error, not a reason to look elsewhere: it means that copy is damaged.

Your own data (`imagefolder`, `tensors`) is copied from `data.local_dir`: regular files only, since what is copied
is cached and pushed to the remote. A symbolic link, which could lead anywhere on the machine, is refused; files
of an image folder that are not PNG or JPEG images are left out, and counted.
"""

import gzip
import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

from pipeline.data.decode import IMAGE_SUFFIXES
from pipeline.data.published import DataFile, Dataset
from pipeline.errors import PipelineError
from pipeline.safe_io import atomic_dir, atomic_path, first_line, writing


def md5_of(stream) -> str:
    return hashlib.file_digest(stream, "md5").hexdigest()


def check_md5(path: Path, expected: DataFile) -> None:
    """Accept the published .gz, or any gzip whose decompressed bytes are the published ones."""
    with open(path, "rb") as stream:
        actual = md5_of(stream)
    if actual == expected.md5:
        return
    if expected.content_md5 is not None:
        try:
            with gzip.open(path, "rb") as stream:
                if md5_of(stream) == expected.content_md5:
                    return
        except (OSError, EOFError):
            pass  # not a readable gzip: reported below as the mismatch it is
    raise PipelineError(f"{path}: MD5 {actual} does not match the published {expected.md5} (damaged or wrong file)")


def copy_verified(source: Path, target: Path, expected: DataFile, verify: bool) -> None:
    if verify:
        check_md5(source, expected)
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def download_verified(url: str, target: Path, expected: DataFile, verify: bool) -> None:
    from torchvision.datasets.utils import download_url

    with atomic_path(target) as temporary:
        download_url(url, str(temporary.parent), temporary.name)
        if verify:
            check_md5(temporary, expected)


def fetch_file(dataset: Dataset, expected: DataFile, target: Path, folders: list[Path], verify: bool) -> str:
    """Put one verified file at `target`; return where it came from."""
    for folder in folders:
        if (folder / expected.name).is_file():
            copy_verified(folder / expected.name, target, expected, verify)
            return str(folder / expected.name)
    failures = []
    for mirror in dataset.mirrors:
        url = mirror + expected.name
        try:
            download_verified(url, target, expected, verify)
            return url
        except (urllib.error.URLError, OSError, RuntimeError, PipelineError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', None) or first_line(error)}")
    looked_in = ", ".join(str(folder) for folder in folders) or "no local folder"
    raise PipelineError(
        f"{expected.name}: not in {looked_in} and no mirror gave a valid copy ({'; '.join(failures)}); "
        "set data.local_dir to a folder holding the IDX gz files"
    )


def fetch_dataset(dataset: Dataset, out_dir: Path, local_dir: Path | None, verify: bool) -> list[str]:
    """Fetch every file of `dataset` into `out_dir`, replacing it whole; return each file's source."""
    if local_dir is not None and not local_dir.is_dir():
        raise PipelineError(f"data.local_dir: folder {local_dir} not found")
    folders = [folder for folder in (local_dir, dataset.system_dir) if folder is not None]
    with atomic_dir(out_dir) as folder:  # all the files or, if one fails, the ones there before
        return [fetch_file(dataset, file, folder / file.name, folders, verify) for file in dataset.files]


# Your own data: what `download` copies from data.local_dir into data/raw/<dataset>/, where DVC caches it.
OWN_SOURCES = {"imagefolder": ("train", "test"), "tensors": ("train.pt", "test.pt")}
LINK_REFUSED = "a symbolic link; data.local_dir must hold your data itself, not links to it"


def own_files(source: Path) -> tuple[list[Path], list[Path], int]:
    """The folders and the files to copy from `source` (a file, or a folder of images), and how many other files
    it holds. Only regular files are copied: a symbolic link, which could lead anywhere on the machine, is an
    error, since what is copied is cached and pushed to the remote."""
    if source.is_symlink():
        raise PipelineError(f"{source}: {LINK_REFUSED}")
    if source.is_file():
        return [], [source], 0
    folders, files, skipped = [source], [], 0
    for folder, subfolders, names in os.walk(source):
        for path in sorted(Path(folder) / name for name in subfolders + names):
            if path.is_symlink():
                raise PipelineError(f"{path}: {LINK_REFUSED}")
            if path.is_dir():
                folders.append(path)
            elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
            else:
                skipped += 1
    return folders, files, skipped


def copy_own_data(local_dir: Path, names: tuple[str, ...], target: Path) -> int:
    """Copy the named folders or files of `local_dir` into `target`, whole or not at all; return how many files
    were left out for not being PNG or JPEG images."""
    missing = [name for name in names if not (local_dir / name).exists()]
    if missing:
        raise PipelineError(f"data.local_dir: {local_dir} holds no {' or '.join(missing)}")
    sources = [own_files(local_dir / name) for name in names]
    with atomic_dir(target) as temporary:
        for folders, files, _ in sources:
            for folder in folders:
                (temporary / folder.relative_to(local_dir)).mkdir(parents=True, exist_ok=True)
            for path in files:
                with writing(temporary / path.relative_to(local_dir)):
                    shutil.copyfile(path, temporary / path.relative_to(local_dir))
    return sum(skipped for _, _, skipped in sources)
