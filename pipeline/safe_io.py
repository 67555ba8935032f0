"""Reading and writing artifacts so that a file is either complete or absent.

Every writer goes through `atomic_path`: the data lands under a temporary name in the same folder and is renamed
into place only once fully written, so an interrupted stage never leaves a file that looks finished. A folder
(a model and the files beside it) is written whole under a temporary name and swapped in by `atomic_dir`, so it
is never a mix of an old and a new one. A full disk (or a file-size limit) is one line naming the file that could
not be written, what was there before being kept. Model files are read with `weights_only=True`, so loading one
never runs code from it.
"""

import contextlib
import ctypes
import errno
import io
import json
import os
import pickle
import re
import resource
import shutil
import zipfile
from pathlib import Path

import torch

from pipeline.errors import PipelineError

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, a full quota, a file-size limit


def final_name(path: Path) -> str:
    """`path` as it will be named once its temporary folders are swapped in (`.<name>.partial-<pid>` is <name>)."""
    return re.sub(r"(^|/)\.([^/]+)\.partial-\d+(?=/|$)", r"\1\2", str(path))


@contextlib.contextmanager
def writing(path: Path):
    """Turn the error of a write that found no room into one line naming `path`."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_ROOM:
            raise
        raise PipelineError(
            f"{final_name(path)}: cannot be written ({error.strerror}); what was there is kept"
        ) from None


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds, else remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_partials(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with writing(path):
            yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield an empty temporary folder beside `path`; if the block succeeds, it takes `path`'s place whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.mkdir()
    try:
        with writing(path):  # a file of the folder that its writer did not name itself
            yield temporary
        swap_in(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # the new folder if the block failed; else the old one


def swap_in(new: Path, path: Path) -> None:
    """Put the folder `new` in `path`'s place, the old folder going to `new`'s name, so that at every instant
    `path` is the old folder or the new one, whole. Where the system cannot exchange two names in one step, the old
    folder is renamed aside first: a kill between the two renames leaves `path` missing and the old folder aside,
    which `recover` puts back."""
    if not path.exists():
        os.rename(new, path)
    elif not exchange(new, path):
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, aside)
        os.rename(new, path)
        os.rename(aside, new)


RENAME_EXCHANGE, AT_FDCWD = 2, -100  # from Linux's <linux/fs.h> and <fcntl.h>


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux's renameat2 with RENAME_EXCHANGE); False where the system or the file
    system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def recover(path: Path) -> None:
    """Tidy what a writer killed with SIGKILL left beside `path`: an old folder renamed aside goes back where
    `path` is missing (else it is deleted), and unfinished or replaced folders are deleted."""
    for aside in sorted(path.parent.glob(f".{path.name}.old-*")):
        if path.exists():
            shutil.rmtree(aside)
        else:
            os.rename(aside, path)
    clear_partials(path)


def clear_partials(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)


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
        try:
            torch.save(obj, temporary)  # to the path: torch names the archive's records after the file
        except RuntimeError as error:
            raise no_room(temporary) or error from None


def no_room(path: Path) -> OSError | None:
    """Why a writer that reports no errno (torch's zip writer: "unexpected pos") stopped part-way through `path`,
    where it is for room: a file-size limit reached, or a full disk."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and path.exists() and path.stat().st_size >= limit:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    if shutil.disk_usage(path.parent).free < 1 << 20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def save_json(obj, path: Path) -> None:
    save_jsons({path: obj})


def save_jsons(files: dict[Path, object]) -> None:
    """Write several JSON files, each {path: what it holds}, all or none: each is written under a temporary name,
    and only once every one is written are they renamed into place (a full disk leaves all as they were)."""
    with contextlib.ExitStack() as stack:
        temporaries = {path: stack.enter_context(atomic_path(path)) for path in files}
        for path, obj in files.items():
            temporaries[path].write_text(json.dumps(obj, indent=2) + "\n")


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
        raise PipelineError(
            f"{path}: refused to load: it needs full unpickling, which can run code ({unpickling_reason(error)})"
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


def unpickling_reason(error: Exception) -> str:
    """What a restricted torch.load refused, from its long message: the line naming the global or opcode."""
    lines = str(error).splitlines()
    reason = next((line.strip() for line in lines if line.strip().startswith("WeightsUnpickler error:")), None)
    return reason.split(" Please use")[0] if reason else first_line(error)


def first_line(error: Exception) -> str:
    """The line of an error's message that says what went wrong. TorchScript's messages start with where in the
    graph the error happened and end with what it was, so for them that is the last line."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1] if lines[0].startswith("The following operation failed in the TorchScript") else lines[0]
