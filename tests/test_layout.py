"""The package's layers, read from its import statements: each imports only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "portal"

#: Who may import whom, lowest layer first. A module may import its own wing and any lower
#: layer; the directory layer (and everything it uses) never sees a request or a session.
LAYERS = [
    {"portal.settings", "portal.quietlog", "portal.applog", "portal.recent", "portal.models",
     "portal.metrics", "portal.logwriter"},
    {"portal.directory", "portal.cache"},
    {"portal.signin", "portal.extensions"},
    {"portal.access"},
    {"portal.accounts"},
    {"portal.web", "portal.auth", "portal.main", "portal.admin", "portal.health", "portal.sso",
     "portal.cli", "portal.watcher"},
]  # fmt: skip
#: Modules that answer no request, so must not touch flask's request, session or flask_login.
NO_REQUESTS = ("portal.directory", "portal.settings", "portal.metrics", "portal.cache",
               "portal.logwriter")  # fmt: skip
#: The one import against the order: the settings checks read Redis URLs as the clients will.
ALLOWED_UPWARDS = {("portal.settings", "portal.cache.redis_clients")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every portal module or package path.py imports (from x import y counted as x.y)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update(f"{source}.{alias.name}" for alias in node.names)
            found.add(source)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def wing(name: str) -> str:
    return ".".join(name.split(".")[:2])


def layer(name: str) -> int | None:
    return next((number for number, wings in enumerate(LAYERS) if wing(name) in wings), None)


#: The entry points above every layer: the app factory, the `portal` command, `make run`.
ENTRY_POINTS = ("portal", "portal.__main__", "portal.devserver")
MODULES = sorted(
    path for path in PACKAGE.rglob("*.py")
    if "testing" not in path.parts and module_name(path) not in ENTRY_POINTS
)  # fmt: skip


def test_every_module_has_a_layer():
    """A new wing must be placed in LAYERS (or the test below would skip it)."""
    assert [module_name(path) for path in MODULES if layer(module_name(path)) is None] == []


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_imports_a_layer_above_it(path):
    name = module_name(path)
    upward = []
    for target in imports_of(path):
        if not target.startswith("portal.") or wing(target) == wing(name):
            continue
        if target.startswith("portal.testing") or target == "portal.create_app":
            upward.append(target)
        elif any(wing(name) == low and target.startswith(high) for low, high in ALLOWED_UPWARDS):
            continue
        elif (layer(target) or 0) > layer(name):
            upward.append(target)
    assert upward == []


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith(NO_REQUESTS)], ids=module_name
)
def test_lower_layers_never_touch_requests_or_sessions(path):
    found = imports_of(path)
    assert not found & {"flask.request", "flask.session", "flask.g", "flask_login"}
    assert not any(name.startswith("flask_login") for name in found)


REPOSITORY = PACKAGE.parent
#: Code outside the package that imports it: a module moved inside portal/ must be followed here.
USERS = sorted(
    path for folder in ("bench", "tests", "scripts", "examples")
    for path in (REPOSITORY / folder).rglob("*.py")
)  # fmt: skip


@pytest.mark.parametrize("path", USERS, ids=lambda path: str(path.relative_to(REPOSITORY)))
def test_every_portal_name_imported_outside_the_package_exists(path):
    """bench/, tests/, scripts/ and examples/ import only names the package still has."""
    import importlib

    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and not node.level
            and (node.module or "").startswith("portal")
        ):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    missing.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("portal"):
                    importlib.import_module(alias.name)
    assert missing == []
