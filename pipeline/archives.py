"""torch.export archives (.pt2): written without debugging aids, and read only once checked to hold no pickle.

`torch.export.load` unpickles with `weights_only=False` wherever an archive asks it to: weights and constants
marked `use_pickle`, custom and opaque objects, and example inputs that a restricted load refuses. A planted
pickle there runs code on loading. So before loading, `vet_archive` reads the archive's own JSON configs and
refuses every entry that would be unpickled, and loads the example inputs with `weights_only=True` itself.
"""

import io
import json
import pickle
import zipfile
from pathlib import Path

import torch
from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX, WEIGHT_FILENAME_PREFIX

from pipeline.artifacts import atomic_path, copy_zip, first_line
from pipeline.errors import PipelineError

SETTINGS_ENTRY = "quantlab.json"  # the extra file of an archive of this pipeline: kind, arch and recipe
# File names of tensors stored as raw bytes; custom and opaque objects are pickles.
RAW_TENSORS = (WEIGHT_FILENAME_PREFIX, TENSOR_CONSTANT_FILENAME_PREFIX)


def without_debugging_aids(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The program without what only debugging reads, as TorchScript files are written without their debug records:
    each node's stack trace (source lines naming the checkout's path) and provenance (Python object ids, so no two
    saves of one model had the same bytes), and the example input it was exported with (7.8 KB of zeros)."""
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
        node.meta.pop("from_node", None)
    program.example_inputs = None
    return program


def write_archive(program: torch.export.ExportedProgram, settings: dict, path: Path) -> None:
    archive = io.BytesIO()
    extra = {SETTINGS_ENTRY: json.dumps(settings)}
    torch.export.save(without_debugging_aids(program), archive, extra_files=extra)
    # The graph is stored as JSON: 29 KB for the MLP's static int8, beside 47 KB of weights; deflated, 2.3 KB.
    with atomic_path(path) as temporary:
        copy_zip(archive, temporary, deflate=lambda name: name.endswith(".json"))


def vet_archive(path: Path) -> None:
    """Refuse an archive that would make `torch.export.load` unpickle anything a restricted load refuses."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith("data.pkl"):  # torch.save's record: a pickle, not an export archive
                    raise PipelineError(f"{path}: refused to load: a pickle (torch.save), not a torch.export archive")
                if name.endswith(("_weights_config.json", "_constants_config.json")):
                    folder = name.rsplit("/", 1)[0]
                    for fqn, entry in json.loads(archive.read(name)).get("config", {}).items():
                        vet_entry(archive, f"{folder}/{entry.get('path_name', '')}", fqn, entry, path)
                elif "/sample_inputs/" in name and archive.getinfo(name).file_size:
                    restricted_load(archive.read(name), "its example inputs", path)
    except (zipfile.BadZipFile, json.JSONDecodeError, AttributeError, KeyError, OSError) as error:
        raise PipelineError(f"{path}: not a readable torch.export archive ({first_line(error)})") from None


def vet_entry(archive: zipfile.ZipFile, member: str, fqn: str, entry: dict, path: Path) -> None:
    """A tensor stored as raw bytes passes; a pickled one (torchao's int8 tensors are) must load restricted; a
    custom or opaque object, which would be unpickled without restriction, is refused."""
    if not entry.get("path_name", "").startswith(RAW_TENSORS):
        raise PipelineError(f"{path}: refused to load: {fqn} is a pickled object, which can run code")
    if entry.get("use_pickle"):
        restricted_load(archive.read(member), fqn, path)


def restricted_load(data: bytes, what: str, path: Path) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise PipelineError(f"{path}: refused to load: {what} is a pickle that can run code ({first_line(error)})")


def load_archive(path: Path) -> tuple[torch.export.ExportedProgram, dict | None]:
    """The program, and the settings this pipeline wrote into it (None for an archive made elsewhere)."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    vet_archive(path)
    extra = {SETTINGS_ENTRY: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
        settings = json.loads(extra[SETTINGS_ENTRY]) if extra[SETTINGS_ENTRY] else None
    except (RuntimeError, ValueError, KeyError, OSError, AssertionError) as error:
        raise PipelineError(f"{path}: not a readable torch.export archive ({first_line(error)})") from None
    return program, settings
