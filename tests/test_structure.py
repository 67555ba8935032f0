"""The package's two layers, and dvc.yaml held to the code.

Stage modules (pipeline/stages/) stand on library modules (the rest of pipeline/), never on each other. DVC re-runs
a stage only when one of its deps changes, so each stage's deps must list its module and every library module it
imports, directly or through others: a module missing there is a change that leaves a stale result behind.
"""

import ast
import shutil
from pathlib import Path

from ruamel.yaml import YAML

from tests.conftest import ROOT

PACKAGE = "pipeline"
STAGES = Path(PACKAGE, "stages")


def imports_of(path: Path, root: Path) -> set[Path]:
    """The package's module files that `path` imports, at the top or inside a function, relative to `root`."""
    names = set()
    for node in ast.walk(ast.parse((root / path).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from pipeline import pt2e` imports a module by the name of a package's attribute.
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    files = {Path(*name.split(".")).with_suffix(".py") for name in names if name.split(".")[0] == PACKAGE}
    return {file for file in files if (root / file).is_file()}


def closure(module: Path, root: Path) -> set[Path]:
    """`module` and every package module it imports, directly or not."""
    found, todo = set(), [module]
    while todo:
        path = todo.pop()
        if path not in found:
            found.add(path)
            todo += imports_of(path, root)
    return found


def stage_module(command: str) -> Path:
    """`python -m pipeline train` runs pipeline/stages/train.py."""
    return STAGES / f"{command.split()[-1]}.py"


def dependency_problems(root: Path) -> list[str]:
    """One line per disagreement between a stage's code deps in dvc.yaml and what its module imports."""
    stages = YAML(typ="safe").load((root / "dvc.yaml").read_text())["stages"]
    problems = []
    for stage, spec in stages.items():
        needed = closure(stage_module(spec["cmd"]), root)
        listed = {Path(dep) for dep in spec["deps"] if Path(dep).parts[0] == PACKAGE}
        problems += [f"stage '{stage}': imports {path} but its deps do not list it" for path in sorted(needed - listed)]
        problems += [f"stage '{stage}': lists {path} but does not import it" for path in sorted(listed - needed)]
    return problems


def modules(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in (root / PACKAGE).rglob("*.py") if path.name != "__init__.py")


def test_every_stage_lists_exactly_the_code_it_imports():
    assert dependency_problems(ROOT) == []


def test_an_import_without_its_dep_is_named(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE)
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    with open(tmp_path / STAGES / "static.py", "a") as module:
        module.write("\nfrom pipeline import plots  # noqa\n")
    assert dependency_problems(tmp_path) == ["stage 'static': imports pipeline/plots.py but its deps do not list it"]


def test_a_dep_the_code_does_not_import_is_named(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE)
    (tmp_path / "dvc.yaml").write_text(
        (ROOT / "dvc.yaml")
        .read_text()
        .replace(
            "      - pipeline/stages/report.py\n",
            "      - pipeline/stages/report.py\n      - pipeline/backends/pt2e.py\n",
            1,
        )
    )
    assert dependency_problems(tmp_path) == ["stage 'report': lists pipeline/backends/pt2e.py but does not import it"]


def test_stages_stand_on_the_library_never_on_each_other():
    """Only the command line (`pipeline/__main__.py`, which composes the stages' commands) imports a stage."""
    crossings = [
        f"{path} imports {imported}"
        for path in modules(ROOT)
        if path.name != "__main__.py"
        for imported in imports_of(path, ROOT)
        if imported.parent == STAGES and imported != path
    ]
    assert crossings == []


def test_package_inits_hold_no_code():
    """An `__init__` runs on every import from its package; code there would be a dependency no test sees."""
    for init in (ROOT / PACKAGE).rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body), init


BACKEND_NAMES = {"eager", "pt2e", "onnxruntime", "openvino"}
MODEL_SUFFIXES = {".pt", ".pt2", ".ts", ".onnx", ".xml", ".bin"}
# Only the backends know their names, and only the file formats their suffixes (`pipeline.formats.files`).
KNOWING = (Path(PACKAGE, "backends"), Path(PACKAGE, "formats"))


def strings_in(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(strings_in(element) for element in node.elts))
    return set()


def name_comparisons(root: Path) -> list[str]:
    """Each comparison (==, !=, in, match) of a value with a backend's name or a model file's suffix outside the
    backends and the file formats, as `path:line: code`."""
    found = []
    for path in modules(root):
        if any(path.is_relative_to(folder) for folder in KNOWING):
            continue
        for node in ast.walk(ast.parse((root / path).read_text())):
            if isinstance(node, ast.Compare):
                compared = set().union(*(strings_in(part) for part in (node.left, *node.comparators)))
            elif isinstance(node, ast.MatchValue):
                compared = strings_in(node.value)
            else:
                continue
            if compared & (BACKEND_NAMES | MODEL_SUFFIXES):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_backend_names_and_file_suffixes_are_compared_only_where_they_are_defined():
    """A stage asks the backend (`pipeline.backends.registry`) or the file (`pipeline.formats.files`) instead, so that
    a new backend or format is a new module, not a new branch in every stage."""
    assert name_comparisons(ROOT) == []


def test_a_comparison_of_a_backend_name_is_found(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE)
    with open(tmp_path / STAGES / "static.py", "a") as module:
        module.write('\nCOMPILED = "pt2e" == "pt2e"  # noqa\n')
    assert [line.split(": ", 1)[1] for line in name_comparisons(tmp_path)] == ["'pt2e' == 'pt2e'"]


# The layers of README's Layout, lowest first: a module imports only from its own layer or those below it. Core is
# what every layer shares: the modules at the package's top (errors, paths, params, safe_io, affine, ...), and the
# archive reader, which models use to adopt an exported model.
LAYERS = ["core", "data", "models", "formats", "runtimes", "backends", "measure", "stages", "command line"]
CORE_MODULES = {"pipeline.formats.torch_export"}


def layer_of(module: str) -> int:
    parts = module.split(".")[1:]  # without the package's name
    if module in CORE_MODULES or not parts:
        return 0
    if parts[0] == "__main__":
        return LAYERS.index("command line")
    return LAYERS.index(parts[0]) if parts[0] in LAYERS else 0


def upward_imports(root: Path) -> list[str]:
    """Each import, at the top of a module or inside a function, of a module in a higher layer than the importer's,
    as `path:line: importer layer -> imported layer (module)`."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        me = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in (name for name in names if name.split(".")[0] == PACKAGE):
                if layer_of(name) > layer_of(me):
                    line = f"{path.relative_to(root)}:{node.lineno}"
                    found.append(f"{line}: {LAYERS[layer_of(me)]} -> {LAYERS[layer_of(name)]} ({name})")
    return found


def test_imports_go_down_the_layers_only():
    assert upward_imports(ROOT) == []


def test_an_upward_import_is_found_even_inside_a_function(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE)
    with open(tmp_path / PACKAGE / "formats" / "files.py", "a") as module:
        module.write("\n\ndef backend():\n    from pipeline.backends import registry  # noqa\n")
    assert [line.split(": ", 1)[1] for line in upward_imports(tmp_path)] == ["formats -> backends (pipeline.backends)"]
