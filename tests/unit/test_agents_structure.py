"""The worker package's boundaries, checked by parsing its source with ``ast``: workers never import
``exchange``, spell no subject by hand, start no detached task, and export what they say they do.
"""

import ast
import importlib
from pathlib import Path

import pytest

AGENTS_DIR = Path(__file__).resolve().parents[2] / "agents"
SOURCES = sorted(AGENTS_DIR.rglob("*.py"))
SUBJECT_ROOTS = ("swarm.", "exchange.", "_INBOX")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module) -> list[str]:
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "agents use absolute imports only"
            modules.append(node.module or "")
    return modules


def test_sources_are_found() -> None:
    names = {path.name for path in SOURCES}
    assert {"runtime.py", "bus.py", "cli.py", "__main__.py"} <= names
    assert len(SOURCES) >= 15


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENTS_DIR)))
def test_never_imports_exchange(path: Path) -> None:
    for module in _imported_modules(_tree(path)):
        assert module != "exchange" and not module.startswith("exchange."), (path, module)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENTS_DIR)))
def test_no_subject_is_spelt_by_hand(path: Path) -> None:
    # Subjects come from protocols.subjects; an f-string or a literal starting like a subject
    # (outside docstrings) would bypass it.
    tree = _tree(path)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            assert not node.value.startswith(SUBJECT_ROOTS), (path, node.lineno, node.value)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENTS_DIR)))
def test_no_detached_tasks_or_callbacks(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("create_task", "ensure_future", "run_forever"), (
                path,
                node.lineno,
            )
        if isinstance(node, ast.keyword) and node.arg == "cb":
            raise AssertionError(f"{path}:{node.value.lineno} subscribes with a callback")


def test_modules_have_docstrings() -> None:
    for path in SOURCES:
        assert ast.get_docstring(_tree(path)), path


def test_public_surface() -> None:
    agents = importlib.import_module("agents")
    roles = importlib.import_module("agents.roles")
    assert agents.__all__ == []
    assert set(roles.__all__) == {"ROLES", "BuiltRole", "RoleSpec"}
    assert list(roles.ROLES) == [
        "oracle",
        "scout",
        "treasury",
        "arbiter",
        "executor",
        "risk",
        "analyst",
    ]
    assert roles.ROLES["arbiter"].exchange_role == "treasury"
