"""Reading and writing artifacts so that a file is either complete or absent.

Every writer goes through `atomic_path`: the data lands under a temporary name in the same folder and is renamed
into place only once fully written, so an interrupted stage never leaves a file that looks finished. Model files
are read with `weights_only=True`, so loading one never runs code from it.
"""

import io
import json
import os
import pickle
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from pipeline.errors import PipelineError


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds, else remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a writer killed with SIGKILL
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path):
    """Yield an empty temporary folder beside `path`; it replaces `path`, whole, if the block succeeds."""
    with atomic_path(path) as temporary:
        temporary.mkdir()
        try:
            yield temporary
            shutil.rmtree(path, ignore_errors=True)  # os.replace cannot put a folder over a full one
        except BaseException:
            shutil.rmtree(temporary)
            raise


def copy_zip(archive: io.BytesIO, path: Path, keep=lambda name: True, deflate=lambda name: False) -> None:
    """Copy the records of a zip archive (torch's file formats are zips) to `path`: only those `keep` accepts,
    compressed where `deflate` says so, the rest with their own compression."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(path, "w") as target:
        for record in source.infolist():
            if keep(record.filename):
                data = source.read(record)
                if deflate(record.filename):
                    record.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(record, data)


def save_torch(obj, path: Path) -> None:
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def save_json(obj, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(obj, indent=2) + "\n")


def save_text(text: str, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def load_torch(path: Path) -> dict:
    """Load a file written by `save_torch`, refusing anything that would need full unpickling."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("\n\n")[-1].splitlines()[0]
        raise PipelineError(
            f"{path}: refused to load: it needs full unpickling, which can run code ({reason})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise PipelineError(f"{path}: not a readable torch file, truncated or corrupt ({first_line(error)})") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: expected a dict of tensors and settings, got {type(obj).__name__}")
    return obj


def load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)") from None
    except json.JSONDecodeError as error:
        raise PipelineError(f"{path}: not valid JSON ({error})") from None


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
