"""The packages meet only over HTTP and public APIs: webapp and todo_api use only the names
flask_entra exports; none of flask_entra, webapp and todo_api imports the emulator; flask_entra's
modules import one another without cycles (module-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import flask_entra

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"flask_entra": ROOT / "flask-entra" / "flask_entra", "webapp": ROOT / "webapp",
            "todo_api": ROOT / "todo_api", "entra_emulator": ROOT / "entra-emulator" /
            "entra_emulator"}


def imports(package: str) -> list[tuple[str, str, list[str]]]:
    """(file, imported module, names) for every import in the package's modules."""
    found = []
    for path in sorted(PACKAGES[package].glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                found.append((path.name, module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(path.name, alias.name, []) for alias in node.names]
    return found


def test_the_apps_use_only_flask_entras_public_names():
    for package in ("webapp", "todo_api"):
        for file, module, names in imports(package):
            if module.startswith("flask_entra"):
                assert module == "flask_entra", f"{package}/{file} imports {module}"
                assert set(names) <= set(flask_entra.__all__), (file, names)


def test_nothing_but_launchers_and_tests_sees_the_emulator():
    for package in ("flask_entra", "webapp", "todo_api"):
        for file, module, _ in imports(package):
            assert not module.startswith("entra_emulator"), f"{package}/{file} imports it"
    for file, module, _ in imports("entra_emulator"):
        assert module.split(".")[0] not in ("flask_entra", "webapp", "todo_api"), file


def test_flask_entras_modules_import_one_another_without_cycles():
    graph: dict[str, set[str]] = {}
    for path in PACKAGES["flask_entra"].glob("*.py"):
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:  # module level: what is imported when the module loads
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    targets.add(node.module)
                else:
                    targets.update(alias.name for alias in node.names)
        graph[path.stem] = targets - {path.stem}

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        for target in graph.get(module, ()):
            visit(target, (*trail, module))

    for module in graph:
        if module != "__init__":
            visit(module, ())
