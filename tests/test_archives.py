"""torch.export archives with code planted in them: each is refused in one line and its code never runs, while
torch's own `torch.export.load` runs it (the plant is live)."""

import io
import json
import pickle
import zipfile

import pytest
import torch
from PIL import Image

import pipeline.formats.torch_export
from pipeline.errors import PipelineError
from pipeline.formats.torch_export import load_archive
from tests.test_cli import Exploit, assert_clean_failure, run


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A torch.export archive as a user writes it: a Linear and a ReLU, the batch dynamic. Its root is `clean/`."""
    path = tmp_path_factory.mktemp("archives") / "clean.pt2"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    program = torch.export.export(model.eval(), (torch.rand(2, 4),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, path)
    return path


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def members(path) -> list:
    with zipfile.ZipFile(path) as archive:
        return [(record.filename, archive.read(record)) for record in archive.infolist()]


def with_config(entries, kind: str, change) -> list:
    """The members with `data/<kind>/model_<kind>_config.json` edited by `change(config)`."""
    edited = []
    for name, data in entries:
        if name.endswith(f"model_{kind}_config.json"):
            config = json.loads(data)
            change(config["config"])
            data = json.dumps(config).encode()
        edited.append((name, data))
    return edited


def replaced(entries, suffix: str, data: bytes) -> list:
    return [(name, data if name.endswith(suffix) else old) for name, old in entries]


def pickled_weight(entries, payload: bytes) -> list:
    """The first weight marked `use_pickle` and replaced by `payload`."""
    entries = with_config(entries, "weights", lambda config: config["0.weight"].update(use_pickle=True))
    return replaced(entries, "data/weights/weight_0", payload)


def duplicated_weight(entries, payload: bytes) -> list:
    """Two members named `data/weights/weight_0`, the payload first and a harmless tensor pickle last: zipfile reads
    the last, torch's reader the first."""
    entries = pickled_weight(entries, pickled(torch.rand(3, 4)))
    name = next(name for name, _ in entries if name.endswith("data/weights/weight_0"))
    return [(name, payload)] + entries


def opaque_object(entries, payload: bytes) -> list:
    entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    entries = with_config(entries, "constants", lambda config: config.update(evil=entry))
    return entries + [("clean/data/constants/opaque_obj_0", payload)]


def custom_object(entries, payload: bytes) -> list:
    entry = {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    entries = with_config(entries, "constants", lambda config: config.update(evil=entry))
    return entries + [("clean/data/constants/custom_obj_0", payload)]


def path_with_dots(entries, payload: bytes) -> list:
    entries = with_config(entries, "weights", lambda config: config["0.weight"].update(path_name="../../weight_0"))
    return entries + [("clean/../../weight_0", payload)]


# name: (how the archive is changed given the payload's bytes, the refusal, whether torch.export.load runs it)
PLANTS = {
    "legacy weights file": (
        lambda entries, payload: entries + [("clean/data/weights/model.pt", payload)],
        "unknown member 'data/weights/model.pt'",
        True,
    ),
    "legacy constants file": (
        lambda entries, payload: entries + [("clean/data/constants/model.pt", payload)],
        "unknown member 'data/constants/model.pt'",
        True,
    ),
    "weight marked use_pickle": (pickled_weight, "0.weight is a pickle that can run code (WeightsUnpickler", True),
    "two members of one name": (duplicated_weight, "member 'clean/data/weights/weight_0' appears more than once", True),
    "example inputs": (
        lambda entries, payload: replaced(entries, "data/sample_inputs/model.pt", payload),
        "its example inputs is a pickle that can run code",
        True,
    ),
    "opaque object": (opaque_object, "evil is stored as 'opaque_obj_0', not a tensor file", True),
    "custom object": (custom_object, "evil is stored as 'custom_obj_0', not a tensor file", False),
    "path with ..": (path_with_dots, "member 'clean/../../weight_0' lies outside the archive's root", False),
    "member outside the root": (
        lambda entries, payload: entries + [("elsewhere/data.pkl", payload)],
        "member 'elsewhere/data.pkl' lies outside the archive's root folder 'clean'",
        False,
    ),
    "unknown extra member": (
        lambda entries, payload: entries + [("clean/data/evil.pkl", payload)],
        "unknown member 'data/evil.pkl'",
        False,
    ),
}


def plant(clean, tmp_path, name: str):
    """The clean archive with the plant `name` in it, at tmp_path/plant.pt2; and the file its code would create."""
    marker = tmp_path / "code-ran"
    payload = Exploit(str(marker))
    raw = pickle.dumps(payload) if name == "opaque object" else pickled(payload)  # torch unpickles those with pickle
    target = tmp_path / "plant.pt2"
    with zipfile.ZipFile(target, "w") as archive:
        for member, data in PLANTS[name][0](members(clean), raw):
            archive.writestr(member, data)
    return target, marker


@pytest.mark.parametrize("name", PLANTS)
def test_planted_code_is_refused_in_one_line_and_never_runs(clean, tmp_path, name):
    target, marker = plant(clean, tmp_path, name)
    with pytest.raises(PipelineError) as refusal:
        load_archive(target)
    message = str(refusal.value)
    assert message.startswith(f"{target}: refused to load: ") and PLANTS[name][1] in message and "\n" not in message
    assert not marker.exists()
    if PLANTS[name][2]:  # the plant is live: torch's own load runs it
        try:
            torch.export.load(target)
        except Exception:
            pass  # most then trip over what the payload returned
        assert marker.exists()


@pytest.mark.parametrize("name", ["legacy weights file", "weight marked use_pickle", "example inputs"])
def test_a_plant_past_the_checks_still_cannot_run(clean, tmp_path, monkeypatch, name):
    """The second wall: with the member checks switched off, torch loads the archive with every torch.load forced
    to weights_only, so the plants it would unpickle fail to load instead of running."""
    monkeypatch.setattr(pipeline.formats.torch_export, "allowed_members", lambda read, present: present)
    target, marker = plant(clean, tmp_path, name)
    with pytest.raises(PipelineError, match="not a readable torch.export archive"):
        load_archive(target)
    assert not marker.exists()


def test_a_clean_archive_loads_and_computes_as_saved(clean):
    program, settings = load_archive(clean)
    inputs = torch.rand(5, 4)
    with torch.inference_mode():
        assert torch.equal(program.module()(inputs), torch.export.load(clean).module()(inputs))
    assert settings is None  # written elsewhere: no settings of this pipeline


def test_a_torch_save_file_named_pt2_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt2")
    with pytest.raises(PipelineError, match="refused to load: a pickle \\(torch.save\\), not a torch.export archive"):
        load_archive(tmp_path / "model.pt2")


def test_predict_refuses_a_planted_archive(trained, clean, tmp_path, monkeypatch):
    """Through the command a user runs on a model folder holding such a file."""
    monkeypatch.chdir(trained)
    folder = tmp_path / "model"
    folder.mkdir()
    target, marker = plant(clean, tmp_path, "legacy weights file")
    target.rename(folder / "model.pt2")
    (folder / "model.json").write_text((trained / "models/fp32/model.json").read_text())
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    assert_clean_failure(run("predict", str(folder), str(image)), "refused to load: unknown member")
    assert not marker.exists()
