"""The results tables of the docs/ pages, each rendered from a set of DVC experiments rather than copied by hand.

docs/results.yaml names each set's page and runs (a run: the `-S key=value` settings of one `dvc exp run`). The
experiments are named `<set>-<run>`, so `dvc exp show` lists them beside any other. A page holds a set's tables
between the lines `<!-- results SET -->` and `<!-- end results SET -->`, which `python -m pipeline results SET`
rewrites from the newest experiment of each name.
"""

import json
import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import Field, ValidationError

from pipeline.errors import PipelineError
from pipeline.markdown import change_cell, table
from pipeline.measure.machine import machine_line
from pipeline.params import Schema, describe, load_yaml
from pipeline.paths import CONVERSION_FILE, DETAILS_FILE, INT8_MODELS, METRICS_FILE

SETS_FILE = Path("docs/results.yaml")
INT8 = list(INT8_MODELS)
LEFT_OUT = "left out"


@dataclass(frozen=True)
class ResultSet:
    name: str
    page: Path
    runs: dict[str, list[str]]  # run name -> its `-S` settings
    stage: str | None = None  # run the pipeline up to this stage only (none: every stage)

    def experiment(self, run: str) -> str:
        return f"{self.name}-{run}"


@dataclass(frozen=True)
class Experiment:
    settings: list[str]
    metrics: dict  # metrics.json: the headline figures
    details: dict  # details.json: every figure, and the machine
    conversion: dict | None  # conversion.json: the seconds static int8 took (None: made before it was kept)
    commit: str  # the commit the experiment ran on
    day: date


class SetSpec(Schema):
    """One results set in docs/results.yaml."""

    page: str  # the docs/ page holding the set's markers
    runs: dict[str, list[str]] = Field(min_length=1)  # run name -> the `-S key=value` settings of its experiment
    stage: str | None = None


def load_set(name: str, sets_file: Path = SETS_FILE) -> ResultSet:
    sets = load_yaml(sets_file)
    if not isinstance(sets, dict) or not all(isinstance(key, str) for key in sets):
        raise PipelineError(f"{sets_file}: expected results sets by name (a mapping with text keys)")
    if name not in sets:
        raise PipelineError(f"{sets_file} has no results set {name!r}; it has {', '.join(sets) or 'none'}")
    if not isinstance(sets[name], dict):
        raise PipelineError(f"{sets_file}: {name}: expected a mapping of page and runs, got {sets[name]!r}")
    try:
        spec = SetSpec.model_validate(sets[name])
    except ValidationError as error:
        raise PipelineError(f"{sets_file}: " + "; ".join(describe(item, name) for item in error.errors())) from None
    return ResultSet(name, Path(spec.page), spec.runs, spec.stage)


def run_experiments(results: ResultSet) -> None:
    """Queue one experiment per run, replacing older ones of the same name, and run them one at a time, so that
    their timings do not compete for the CPU."""
    refs = newest_refs()
    older = [results.experiment(run) for run in results.runs if results.experiment(run) in refs]
    if older:
        dvc(["exp", "remove", *older])
    target = [results.stage] if results.stage else []
    for run, settings in results.runs.items():
        dvc(["exp", "run", "--queue", "--name", results.experiment(run), *target, *(f"-S{s}" for s in settings)])
    dvc(["exp", "run", "--run-all", "--jobs", "1"])


def dvc(arguments: list[str]) -> None:
    if subprocess.run(["dvc", *arguments]).returncode != 0:
        raise PipelineError(f"`dvc {' '.join(arguments)}` failed (its output is above)")


def git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise PipelineError(f"`git {' '.join(arguments)}` failed ({said[0] if said else f'exit {done.returncode}'})")
    return done.stdout.strip()


def newest_refs() -> dict[str, str]:
    """Each DVC experiment's name, and the git ref of the newest experiment of that name (DVC keeps each as
    refs/exps/.../<name>)."""
    refs = git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/").splitlines()
    newest = {}
    for ref in refs:
        newest.setdefault(ref.rsplit("/", 1)[-1], ref)
    return newest


def read_experiment(results: ResultSet, run: str, refs: dict[str, str]) -> Experiment:
    """The experiment of one run, from `refs` (`newest_refs()`)."""
    name = results.experiment(run)
    ref = refs.get(name)
    if ref is None:
        raise PipelineError(f"no DVC experiment named {name}: run `make results SET={results.name}` first")
    return Experiment(
        settings=results.runs[run],
        metrics=json.loads(git("show", f"{ref}:{METRICS_FILE}")),
        details=json.loads(git("show", f"{ref}:{DETAILS_FILE}")),
        conversion=json.loads(git("show", f"{ref}:{CONVERSION_FILE}")) if has_file(ref, CONVERSION_FILE) else None,
        commit=git("rev-parse", "--short", f"{ref}^"),
        day=date.fromisoformat(git("log", "-1", "--format=%cs", ref)),
    )


def has_file(ref: str, path: Path) -> bool:
    return bool(git("ls-tree", "--name-only", ref, str(path)))


def render(results: ResultSet, experiments: dict[str, Experiment]) -> str:
    """The set's four tables (accuracy, speed, size, each file against its floor) and what they were measured on."""
    machines = sorted({machine_line(experiment.details["environment"]) for experiment in experiments.values()})
    commits = sorted({experiment.commit for experiment in experiments.values()})
    days = sorted({experiment.day.isoformat() for experiment in experiments.values()})
    period = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    source = (
        f"Generated by `make results SET={results.name}` from the experiments `{results.name}-*` (one `dvc exp "
        f"run` each, one at a time), code at commit {', '.join(commits)}, run {period}. "
        f"Measured on {'; '.join(machines)}."
    )
    sections = [
        source,
        "Accuracy on the test set, and each int8 variant's change against FP32 in points with its 95% interval "
        "(paired bootstrap over the test images); the last column is the seconds `static` took to make static "
        "int8, its recipe's steps included, on the machine named above:",
        "\n".join(table(["run", "settings", "fp32", *INT8, "static took"], accuracy_rows(experiments))),
        "Speed: times faster than the fastest FP32 form on any runtime, at each timed batch size, each model in "
        "its fastest form; the last column is the fastest int8 of the three:",
        "\n".join(speed_table(experiments)),
        "Size of the deployed file, and how many times smaller than FP32's and larger than its floor (the same "
        "weights at their own widths, nothing else):",
        "\n".join(table(["run", "fp32", *INT8], size_rows(experiments))),
        "Each file a variant writes, against its floor:",
        "\n".join(files_table(experiments)),
    ]
    return "\n\n".join(sections)


def made_int8(experiment: Experiment) -> list[str]:
    """The int8 variants the experiment made (`qat.epochs: 0` leaves QAT out)."""
    return [name for name in INT8 if name in experiment.metrics]


def settings_cell(settings: list[str]) -> str:
    return " ".join(f"`{setting}`" for setting in settings) or "defaults"


def accuracy_rows(experiments: dict[str, Experiment]) -> list[list[str]]:
    rows = []
    for run, experiment in experiments.items():
        metrics = experiment.metrics
        cells = [
            f"{metrics[name]['accuracy']:.4f}, {change_cell(metrics[name]['vs_fp32'])}" if name in metrics else LEFT_OUT
            for name in INT8
        ]
        took = f"{experiment.conversion['static']['seconds']:.0f} s" if experiment.conversion else "not kept"
        rows.append([run, settings_cell(experiment.settings), f"{metrics['fp32']['accuracy']:.4f}", *cells, took])
    return rows


def speed_table(experiments: dict[str, Experiment]) -> list[str]:
    batches = list(next(iter(experiments.values())).metrics["fp32"]["latency_ms"])
    per_batch = " / ".join(batch.replace("_", " ") for batch in batches)
    rows = []
    for run, experiment in experiments.items():
        made = made_int8(experiment)
        forms = {name: experiment.details[name]["best_form"] for name in ("fp32", *made)}
        speedups = {name: experiment.metrics[name]["vs_fp32"]["speedup"] for name in made}
        fastest = [max(made, key=lambda name: speedups[name][batch]) for batch in batches]
        rows.append(
            [
                run,
                *(
                    " / ".join(f"{speedups[name][batch]:.2f}x" for batch in batches) if name in made else LEFT_OUT
                    for name in INT8
                ),
                " / ".join(forms["fp32"][batch] for batch in batches),
                " / ".join(
                    f"{name} on {forms[name][batch]}, {speedups[name][batch]:.2f}x"
                    for name, batch in zip(fastest, batches)
                ),
            ]
        )
    header = ["run", *(f"{name} ({per_batch})" for name in INT8), "fastest fp32", "fastest int8"]
    return table(header, rows)


def size_rows(experiments: dict[str, Experiment]) -> list[list[str]]:
    rows = []
    for run, experiment in experiments.items():
        details = experiment.details
        fp32 = details["fp32"]
        cells = [f"{fp32['deploy_size_bytes'] / 1000:.1f} KB, {fp32['deploy_floor_ratio']:.2f}x floor"]
        for name in INT8:
            if name not in details:
                cells.append(LEFT_OUT)
                continue
            entry = details[name]
            smaller = 1 / entry["vs_fp32"]["deploy_size_ratio"]  # as the report shows it
            cells.append(
                f"{entry['deploy_size_bytes'] / 1000:.1f} KB, {smaller:.2f}x smaller, "
                f"{entry['deploy_floor_ratio']:.2f}x floor"
            )
        rows.append([run, *cells])
    return rows


def files_table(experiments: dict[str, Experiment]) -> list[str]:
    files = {
        (run, name): experiment.details[name]["files"]
        for run, experiment in experiments.items()
        for name in ("fp32", *made_int8(experiment))
    }
    kinds = list(dict.fromkeys(kind for variant_files in files.values() for kind in variant_files))
    rows = [
        [run, name, *(f"{variant_files[kind]['floor_ratio']:.2f}" if kind in variant_files else "" for kind in kinds)]
        for (run, name), variant_files in files.items()
    ]
    return table(["run", "variant", *kinds], rows)


def replace_block(page: str, name: str, block: str, path: Path) -> str:
    """The page (read from path) with the text between its markers for this set replaced by the block."""
    start, end = f"<!-- results {name} -->", f"<!-- end results {name} -->"
    if page.count(start) != 1 or page.count(end) != 1 or page.index(start) > page.index(end):
        raise PipelineError(f"{path} must hold the lines {start} and {end} once each, in that order")
    head, rest = page.split(start)
    return f"{head}{start}\n\n{block}\n\n{end}{rest.split(end)[1]}"
