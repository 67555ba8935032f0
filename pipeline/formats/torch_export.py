"""torch.export archives (.pt2): written without debugging aids, and read so that no member can run code.

`torch.export.load` unpickles without restriction wherever an archive leads it: members the format no longer
writes but still reads (legacy weights and constants files), weights and constants marked `use_pickle`, custom
and opaque objects, and example inputs that a restricted load refuses. A planted pickle there runs on loading. So
an archive is never handed to torch as it came:
1. `vetted_members` reads it member by member. Every name must be one the format defines for the archive's own
   models, under its one root folder, and appear once; each tensor file a config names must be raw bytes, or a
   pickle that loads with `weights_only=True`, and so must the example inputs. Anything else is refused.
2. The members that passed are written into a new archive in memory, so torch reads the bytes that were vetted
   and nothing else (a second member of the same name, say, is gone).
3. torch loads that archive with every `torch.load` forced to `weights_only=True` (TORCH_FORCE_WEIGHTS_ONLY_LOAD):
   should a way past the checks above exist, the load fails instead of running code.

An int8 archive of torchao's (pt2e) names ops and weight types that torchao registers, and runs fast only with the
Inductor passes it registers: all are registered before such an archive is read, found by name in its bytes.
"""

import io
import json
import os
import pickle
import re
import types
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.safe_io import atomic_path, copy_zip, first_line, unpickling_reason

SETTINGS_ENTRY = "quantlab.json"  # the extra file of an archive of this pipeline: kind, arch and recipe
# What torch.export.save writes, relative to the archive's root folder: these fixed records, then per model
# `models/<model>.json` and the files below, and the files `extra_files` names.
FIXED_MEMBERS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
MODEL_JSON = re.compile(r"models/(\w+)\.json")
EXTRA_FILE = re.compile(r"extra/[\w.-]+")
# Each config names its tensor files; raw bytes or a tensor pickle. Custom and opaque objects (custom_obj_*,
# opaque_obj_*) are unpickled without restriction, so they match neither pattern and are refused.
CONFIGS = {
    "data/weights/{}_weights_config.json": r"weight_\d+",
    "data/constants/{}_constants_config.json": r"tensor_\d+",
}


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


def archive_root(names: list[str]) -> str:
    """The one folder every member lies in (torch names it after the file); a member elsewhere is refused."""
    root = names[0].split("/", 1)[0] if names else ""
    for name in names:
        parts = name.split("/")
        if parts[0] != root or len(parts) < 2 or "\\" in name or any(part in ("", ".", "..") for part in parts):
            raise PipelineError(f"refused to load: member {name!r} lies outside the archive's root folder {root!r}")
    return root


def allowed_members(read, present) -> set[str]:
    """The members the format defines for the models this archive holds, each tensor file vetted on the way.
    `read(name)` gives a member's bytes, by its name under the root."""
    allowed = set(FIXED_MEMBERS) | {name for name in present if EXTRA_FILE.fullmatch(name)}
    for model in (match[1] for match in map(MODEL_JSON.fullmatch, sorted(present)) if match):
        sample_inputs = f"data/sample_inputs/{model}.pt"
        allowed |= {f"models/{model}.json", sample_inputs}
        if data := read(sample_inputs):  # empty where the program was saved without example inputs
            restricted_load(data, "its example inputs")
        for config_format, tensor_file in CONFIGS.items():
            config = config_format.format(model)
            allowed.add(config)
            folder = config.rsplit("/", 1)[0]
            for fqn, entry in json.loads(read(config)).get("config", {}).items():
                allowed.add(vetted_tensor(read, folder, fqn, entry, tensor_file))
    return allowed


def vetted_tensor(read, folder: str, fqn: str, entry: dict, tensor_file: str) -> str:
    """The member holding one weight or constant: raw bytes, or a pickle that loads restricted (torchao's int8
    tensors are pickled). A custom or opaque object, which torch unpickles without restriction, is refused."""
    name = entry.get("path_name", "")
    if not re.fullmatch(tensor_file, name):
        raise PipelineError(
            f"refused to load: {fqn} is stored as {name!r}, not a tensor file of the format (custom and opaque "
            "objects are pickles that can run code)"
        )
    if entry.get("use_pickle"):
        restricted_load(read(f"{folder}/{name}"), fqn)
    return f"{folder}/{name}"


def restricted_load(data: bytes, what: str) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = unpickling_reason(error)
        raise PipelineError(f"refused to load: {what} is a pickle that can run code ({reason})") from None


def vetted_members(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """Every member of the archive with its bytes, once each has passed the checks in the module's docstring."""
    names = archive.namelist()
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise PipelineError(f"refused to load: member {twice[0]!r} appears more than once")
    root = archive_root(names)
    members = [(record, archive.read(record)) for record in archive.infolist()]
    contents = {record.filename[len(root) + 1 :]: data for record, data in members}
    if "data.pkl" in contents:
        raise PipelineError("refused to load: a pickle (torch.save), not a torch.export archive")
    # torchao's int8 weight types are refused by a restricted load until torchao registers them: found by name in the
    # members' bytes, before any is loaded
    if any(name in data for data in contents.values() for name in TORCHAO_NAMES):
        register_torchao()

    def read(name: str) -> bytes:
        if name not in contents:
            raise PipelineError(f"not a readable torch.export archive (no member {name})")
        return contents[name]

    unknown = sorted(contents.keys() - allowed_members(read, contents.keys()))
    if unknown:
        raise PipelineError(f"refused to load: unknown member {unknown[0]!r}, which torch.export.load might unpickle")
    return members


def rebuilt(path: Path) -> io.BytesIO:
    """A new archive in memory holding only the vetted members of the one at `path`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = vetted_members(archive)
    except (zipfile.BadZipFile, json.JSONDecodeError, AttributeError, KeyError, OSError) as error:
        raise PipelineError(f"{path}: not a readable torch.export archive ({first_line(error)})") from None
    except PipelineError as error:
        raise PipelineError(f"{path}: {error}") from None
    clean = io.BytesIO()
    with zipfile.ZipFile(clean, "w") as archive:
        for record, data in members:
            archive.writestr(record, data)
    clean.seek(0)
    return clean


@contextmanager
def weights_only_loads():
    """Every torch.load in the block restricted to tensors and plain data, whatever its caller asked for."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


TORCHAO_NAMES = (b"torchao", b"quantized_decomposed")  # in torchao's int8 graphs (ops) and weights (pickled types)


def register_torchao() -> None:
    """torchao's int8 ops and weight types (safe for restricted loads), and the Inductor passes that fuse each
    quantize/dequantize pair with its op into one int8 kernel (registered when X86InductorQuantizer's module is
    imported; seconds, so only where needed)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401


def load_archive(path: Path) -> tuple[torch.export.ExportedProgram, dict | None]:
    """The program, and the settings this pipeline wrote into it (None for an archive made elsewhere)."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    archive = rebuilt(path)
    extra = {SETTINGS_ENTRY: ""}
    try:
        with weights_only_loads():
            program = torch.export.load(archive, extra_files=extra)
        settings = json.loads(extra[SETTINGS_ENTRY]) if extra[SETTINGS_ENTRY] else None
    except (RuntimeError, ValueError, KeyError, OSError, AssertionError, pickle.UnpicklingError) as error:
        raise PipelineError(f"{path}: not a readable torch.export archive ({first_line(error)})") from None
    return program, settings


DROPOUTS = (torch.ops.aten.dropout.default, torch.ops.aten.dropout_.default)


def dropouts(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [node for node in graph.graph.nodes if node.op == "call_function" and node.target in DROPOUTS]


def allow_train_eval(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make `graph.train()` and `graph.eval()` switch its dropout and batch-norm ops, as torchao's
    `allow_exported_model_train_eval` does, but keeping each dropout's rate. torchao's switch rewrites every
    dropout from a pattern whose rate is 0.5: torchvision's ViT, whose dropouts have rate 0, then dropped half its
    activations in QAT, and its training accuracy fell from 94% to 53% in the first epoch."""
    graph.dropout_rates = [node.args[1] for node in dropouts(graph)]
    graph.train = types.MethodType(switch_mode, graph)
    graph.eval = types.MethodType(lambda self: self.train(False), graph)
    return graph


def switch_mode(graph: torch.fx.GraphModule, training: bool = True) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(graph)
    for node, rate in zip(dropouts(graph), graph.dropout_rates, strict=True):
        node.update_arg(1, rate)
    graph.recompile()
    return graph
