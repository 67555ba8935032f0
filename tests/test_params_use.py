"""dvc.yaml's `params` held to the keys each stage reads, as test_structure holds its code deps to its imports.

DVC re-runs a stage when a key it lists changes, and only then: a key the stage reads but does not list is a change
that leaves a stale result behind; a key it lists but never reads re-runs it for nothing. Every params section is
recorded as it is read, during real runs of every stage command on tiny data: the default backend for all of them,
and each other backend for the conversions that read a backend's own section.
"""

import contextlib

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from pipeline.__main__ import STAGES, app
from pipeline.params import Params, Section, load_params
from tests.conftest import ROOT, tiny_params, write_dataset, write_params

OTHER_BACKENDS = ("pt2e", "onnxruntime", "openvino")


def sections(kind: type[Section], prefix: str = "") -> dict[type[Section], str]:
    """Each section's class and its dotted name, nested ones (`train.vit`) included."""
    found = {}
    for name, field in kind.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            found[field.annotation] = prefix + name
            found |= sections(field.annotation, f"{prefix}{name}.")
    return found


SECTION_OF = sections(Params)


@contextlib.contextmanager
def recording(read: set[str]):
    """Add to `read` every params key (`section.key`, or a top-level key such as `seed`) that is read."""

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        kind = type(self)
        if name in kind.model_fields and not isinstance(value, Section):
            read.add(name if kind is Params else f"{SECTION_OF[kind]}.{name}")
        return value

    original = Section.__getattribute__
    Section.__getattribute__ = getattribute
    try:
        yield read
    finally:
        Section.__getattribute__ = original


def run(stage: str, *options: str) -> set[str]:
    """The params keys one stage command reads while it runs."""
    with recording(set()) as read:
        result = CliRunner().invoke(app, [stage, *options])
    assert result.exit_code == 0, result.output
    return read


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> dict[str, set[str]]:
    """{stage: keys read} over the runs of every stage, with every backend where a backend changes what is read."""
    base = tmp_path_factory.mktemp("params_use")
    work = base / "work"
    work.mkdir()
    params = tiny_params(write_dataset(base / "idx"))
    write_params(work / "params.yaml", params)
    found = {}
    with contextlib.chdir(work):
        for stage in STAGES:
            found[stage] = run(stage)
        for backend in OTHER_BACKENDS:
            other = write_params(
                base / f"{backend}.yaml", {**params, "quantize": {**params["quantize"], "backend": backend}}
            )
            for stage in ("dynamic", "static"):
                found[stage] |= run(stage, "--params", str(other), "--out", str(base / f"{backend}_{stage}"))
    return found


def listed(dvc_yaml: str) -> dict[str, list[str]]:
    stages = YAML(typ="safe").load(dvc_yaml)["stages"]
    return {stage: spec.get("params", []) for stage, spec in stages.items()}


def covers(entry: str, key: str) -> bool:
    """dvc.yaml's `train` lists every key of the section; `train.arch` that key alone."""
    return key == entry or key.startswith(f"{entry}.")


def params_problems(reads: dict[str, set[str]], dvc_yaml: str) -> list[str]:
    """One line per disagreement between a stage's params in dvc.yaml and the keys it read."""
    problems = []
    for stage, entries in listed(dvc_yaml).items():
        read = reads[stage]
        problems += [
            f"stage '{stage}': reads {key} but its params do not list it"
            for key in sorted(read)
            if not any(covers(entry, key) for entry in entries)
        ]
        problems += [
            f"stage '{stage}': lists {entry} but reads no key of it"
            for entry in entries
            if not any(covers(entry, key) for key in read)
        ]
    return problems


def test_every_stage_lists_exactly_the_params_it_reads(reads):
    problems = params_problems(reads, (ROOT / "dvc.yaml").read_text())
    assert problems == [], "\n".join(problems)


def test_a_key_read_but_not_listed_is_named(reads):
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    sensitivity = dvc_yaml[dvc_yaml.index("  sensitivity:") :]
    entry = "      - quantize.backend\n"
    assert entry in sensitivity
    edited = dvc_yaml.replace(sensitivity, sensitivity.replace(entry, "", 1))
    assert params_problems(reads, edited) == [
        "stage 'sensitivity': reads quantize.backend but its params do not list it"
    ]


def test_a_key_listed_but_never_read_is_named(reads):
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    edited = dvc_yaml.replace("      - evaluate\n", "      - evaluate\n      - qat.lr\n", 1)
    assert params_problems(reads, edited) == ["stage 'evaluate': lists qat.lr but reads no key of it"]


def test_recording_sees_a_key_read_in_library_code(tmp_path):
    """Keys read below the stage module count too: the engine `auto` resolves through train.arch."""
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(tmp_path)))
    with recording(set()) as read:
        assert params.engine == "x86"
    assert read == {"quantize.engine", "train.arch"}
