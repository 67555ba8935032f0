"""The docs/ results tables: rendered from experiments' metrics, written between a page's markers; every set runs."""

import subprocess
from datetime import date
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.errors import PipelineError
from pipeline.measure import result_tables
from pipeline.measure.result_tables import (
    Experiment,
    ResultSet,
    load_set,
    newest_refs,
    read_experiment,
    render,
    replace_block,
)
from pipeline.paths import CONVERSION_FILE, DETAILS_FILE, METRICS_FILE
from pipeline.safe_io import load_json, save_json

ROOT = Path(__file__).resolve().parent.parent


def committed_run(settings: list[str], conversion: dict | None = None) -> Experiment:
    """The default run's committed metrics, as an experiment."""
    metrics, details = load_json(ROOT / METRICS_FILE), load_json(ROOT / DETAILS_FILE)
    return Experiment(settings, metrics, details, conversion, commit="abc1234", day=date(2026, 12, 2))


def test_tables_hold_each_run_s_figures_and_the_machine():
    experiment = committed_run(["quantize.backend=pt2e"], conversion={"static": {"seconds": 12.7}})
    older = committed_run(["quantize.backend=eager"])  # made before static's seconds were kept
    results = ResultSet("demo", Path("page.md"), {"one": experiment.settings, "two": older.settings})
    text = render(results, {"one": experiment, "two": older})
    static = experiment.metrics["static"]
    low, high = (end * 100 for end in static["vs_fp32"]["accuracy_change_ci95"])
    assert (
        f"{static['accuracy']:.4f}, {static['vs_fp32']['accuracy_change'] * 100:+.2f} [{low:+.2f}, {high:+.2f}]" in text
    )
    speedups = static["vs_fp32"]["speedup"]
    assert " / ".join(f"{speedups[batch]:.2f}x" for batch in speedups) in text
    assert f"{experiment.details['static']['deploy_size_bytes'] / 1000:.1f} KB" in text
    assert experiment.details["environment"]["cpu_model"] in text
    assert "| one | `quantize.backend=pt2e` |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| one | `", "| two | `"))]
    assert rows[0].endswith("| 13 s |") and rows[1].endswith("| not kept |")
    assert "commit abc1234, run 2026-12-02" in text


def test_the_block_between_a_set_s_markers_is_replaced_and_the_rest_kept():
    page = "# Page\n\nbefore\n<!-- results demo -->\nold table\n<!-- end results demo -->\nafter\n"
    rewritten = replace_block(page, "demo", "new table", Path("page.md"))
    assert rewritten == "# Page\n\nbefore\n<!-- results demo -->\n\nnew table\n\n<!-- end results demo -->\nafter\n"
    assert replace_block(rewritten, "demo", "new table", Path("page.md")) == rewritten


@pytest.mark.parametrize(
    "page",
    ["no markers\n", "<!-- end results demo -->\n<!-- results demo -->\n", "<!-- results demo -->\n" * 2],
)
def test_a_page_without_its_markers_once_in_order_is_refused(page):
    markers = "page.md must hold the lines <!-- results demo --> and <!-- end results demo -->"
    with pytest.raises(PipelineError, match=markers):
        replace_block(page, "demo", "table", Path("page.md"))


def test_every_set_names_a_page_with_its_markers_and_settings_params_yaml_has():
    """`dvc exp run -S` refuses a key params.yaml lacks: a set's typo would stop `make results` after its first runs."""
    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    sets = YAML(typ="safe").load((ROOT / result_tables.SETS_FILE).read_text())
    for name in sets:
        results = load_set(name, ROOT / result_tables.SETS_FILE)
        page = (ROOT / results.page).read_text()
        assert replace_block(page, name, "table", results.page)
        for setting in (setting for settings in results.runs.values() for setting in settings):
            key, _ = setting.split("=", 1)
            section = params
            for part in key.split("."):
                assert part in section, f"{name}: {key} is not in params.yaml"
                section = section[part]


def test_a_set_or_an_experiment_that_is_not_there_is_named(tmp_path, monkeypatch):
    with pytest.raises(PipelineError, match="has no results set 'nothing'; it has backends"):
        load_set("nothing", ROOT / result_tables.SETS_FILE)
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "--quiet"], check=True)
    results = ResultSet("demo", Path("page.md"), {"one": []})
    with pytest.raises(PipelineError, match="no DVC experiment named demo-one: run `make results SET=demo` first"):
        read_experiment(results, "one", newest_refs())


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected results sets by name (a mapping with text keys)"),
        ("- backends\n", "expected results sets by name (a mapping with text keys)"),
        ("7\n", "expected results sets by name (a mapping with text keys)"),
        ("8: {page: a.md, runs: {one: []}}\n", "expected results sets by name (a mapping with text keys)"),
        ("demo:\n", "demo: expected a mapping of page and runs, got None"),
        ("demo: {runs: {one: []}}\n", "missing key 'demo.page'"),
        ("demo: {page: a.md}\n", "missing key 'demo.runs'"),
        ("demo: {page: a.md, runs: [one]}\n", "demo.runs: Input should be a valid dictionary"),
        ("demo: {page: a.md, runs: {one: x=1}}\n", "demo.runs.one: Input should be a valid list"),
        ("demo: {page: a.md, runs: {}}\n", "demo.runs: Dictionary should have at least 1 item"),
        ("demo: {page: a.md, runs: {one: []}, colour: red}\n", "unknown key 'demo.colour'"),
        ("demo:\n  page: a.md\n  runs: {one: [}\n", "not valid YAML (line 3, "),
    ],
)
def test_a_results_file_of_the_wrong_shape_is_one_line(tmp_path, text, message):
    (tmp_path / "results.yaml").write_text(text)
    with pytest.raises(PipelineError) as error:
        load_set("demo", tmp_path / "results.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_experiment_without_its_reports_or_a_folder_outside_git_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"^`git for-each-ref .* refs/exps/` failed \(fatal: not a git repository"):
        newest_refs()
    subprocess.run(["git", "init", "--quiet"], check=True)
    subprocess.run(
        ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "--quiet", "--allow-empty", "-m", "x"]
    )
    subprocess.run(["git", "update-ref", "refs/exps/ab/cdef/demo-one", "HEAD"], check=True)
    results = ResultSet("demo", Path("page.md"), {"one": []})
    with pytest.raises(PipelineError, match=rf"^`git show refs/exps/ab/cdef/demo-one:{METRICS_FILE}` failed \(fatal: "):
        read_experiment(results, "one", newest_refs())


def test_an_experiment_s_seconds_are_read_where_it_kept_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "--quiet"], check=True)
    commit = ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "--quiet", "--allow-empty", "-m", "x"]
    subprocess.run(commit, check=True)  # the baseline an experiment's commit has as parent
    results = ResultSet("demo", Path("page.md"), {"one": []})
    kept = []
    for conversion in (None, {"static": {"seconds": 3.5}}):
        for path, obj in ((METRICS_FILE, {}), (DETAILS_FILE, {}), (CONVERSION_FILE, conversion)):
            if obj is not None:
                save_json(obj, path)
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(commit, check=True)
        subprocess.run(["git", "update-ref", "refs/exps/ab/cdef/demo-one", "HEAD"], check=True)
        kept.append(read_experiment(results, "one", newest_refs()).conversion)
    assert kept == [None, {"static": {"seconds": 3.5}}]
