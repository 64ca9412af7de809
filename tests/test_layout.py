"""The tree, its import graph and docs/ARCHITECTURE.md agree; no module is named like a library;
no private name crosses a module boundary."""

import ast
import importlib.metadata
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
# folder -> the name the import graph uses for it (trrg.<name>)
FOLDERS = {"src/trrg": "trrg", "modeling_trrg": "modeling", "processing": "processing", "assembly": "assembly",
           "trainers": "trainers", "evaluation": "evaluation", "commands": "commands", "space": "space"}
# Who may import whom: data and models below, training and evaluation above them, commands on top.
ALLOWED = {
    "modeling": set(),
    "processing": {"modeling"},
    "assembly": {"modeling", "processing", "trrg"},
    "evaluation": {"modeling", "processing", "trrg"},
    "trainers": {"modeling", "processing", "assembly", "evaluation", "trrg"},
    "space": {"modeling", "processing", "assembly", "evaluation", "trrg"},
    "commands": {"modeling", "processing", "assembly", "evaluation", "trainers", "space", "trrg"},
    "trrg": set(),  # the root imports its sub-packages lazily, by name
}


def _modules():
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield name, path


def _trrg_imports(path: Path):
    """(module imported, names imported) for every `trrg.*` import of a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "trrg":
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trrg":
                    yield alias.name, []


def _import_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, path in _modules():
        for module, _ in _trrg_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else "trrg"
            if target != name:
                graph[name].add(target)
    return graph


def test_folders_import_only_downwards():
    for folder, targets in _import_graph().items():
        assert targets <= ALLOWED[folder], f"{folder} imports {sorted(targets - ALLOWED[folder])}: not allowed"


def test_architecture_doc_shows_the_real_import_graph():
    block = ARCHITECTURE.split("<!-- import-graph")[1].split("<!-- /import-graph -->")[0]
    documented = {}
    for line in block.splitlines():
        match = re.match(r"- `(\w+)` → (.*)", line)
        if match:
            named = set(re.findall(r"`(\w+)`", match.group(2))) & set(FOLDERS.values())
            documented[match.group(1)] = set() if match.group(2).startswith("(nothing") else named
    actual = {folder: targets for folder, targets in _import_graph().items() if folder != "trrg"}
    assert {k: v for k, v in documented.items() if v} == actual


def test_architecture_doc_names_every_module():
    missing = [str(path.relative_to(ROOT)) for name, path in _modules()
               if name != "trrg" and str(path.relative_to(ROOT)) not in ARCHITECTURE]
    assert not missing, f"docs/ARCHITECTURE.md does not mention {missing}"


def test_no_module_is_named_like_a_library():
    libraries = {name.lower() for name in importlib.metadata.packages_distributions()} | {"evaluate", "datasets"}
    clashes = [str(path.relative_to(ROOT)) for _, path in _modules()
               if path.stem.lower() in libraries and path.stem != "__init__"]
    assert not clashes, f"modules named like an installed library: {clashes}"


def test_no_private_name_is_imported_across_modules():
    crossings = [f"{path.relative_to(ROOT)}: {module}.{name}" for _, path in _modules()
                 for module, names in _trrg_imports(path) for name in names
                 if name.startswith("_") and not name.startswith("__")]
    assert not crossings, crossings


def test_every_command_is_a_module_with_main_and_nothing_else_is():
    from trrg.cli import COMMANDS

    modules = {module for module, _ in COMMANDS.values()}
    files = {path.stem for path in (ROOT / "commands").glob("*.py")} - {"__init__", "parsing"}
    assert files == modules
    for module in modules:
        assert "def main(" in (ROOT / "commands" / f"{module}.py").read_text() or module == "space"


def test_pyproject_installs_every_package_folder():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in project["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found <= set(project["packages"]), sorted(found - set(project["packages"]))
