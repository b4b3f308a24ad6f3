"""The core is pure: parse every module under exchange/core with ``ast`` and fail on any import of
a clock, randomness, the environment, I/O or concurrency, and on any call to ``open``."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "exchange" / "core"
FORBIDDEN = frozenset(
    {
        "time",
        "datetime",
        "random",
        "uuid",
        "os",
        "asyncio",
        "anyio",
        "nats",
        "structlog",
        "socket",
        "subprocess",
        "threading",
        "sqlite3",
        "pathlib",
        "io",
        "importlib",
        "secrets",
        "multiprocessing",
        "concurrent",
        "shutil",
        "tempfile",
    }
)
MODULES = sorted(CORE.rglob("*.py"))


def impurities(source: str) -> list[str]:
    """Every forbidden import or ``open``/``__import__`` call in ``source``, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt | ast.expr):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [
            f"line {node.lineno}: imports {name}"
            for name in names
            if name.split(".")[0] in FORBIDDEN
        ]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("open", "__import__")
        ):
            found.append(f"line {node.lineno}: calls {node.func.id}()")
    return found


def test_the_core_has_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"ledger.py", "machine.py", "accounts.py", "limits.py", "pools.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_is_pure(path: Path) -> None:
    assert impurities(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os.path",
        "from datetime import datetime",
        "from random import Random",
        "import nats.aio.client as n",
        "def f():\n    import asyncio",
        "with open('x') as f:\n    pass",
        "pathlib = __import__('pathlib')",
        "from io import StringIO",
        "import uuid, json",
    ],
)
def test_the_checker_catches(source: str) -> None:
    assert impurities(source)


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from decimal import Decimal",
        "from exchange.core import time_windows",
        "import hashlib",
        "x.open()",
        "from . import os",
    ],
)
def test_the_checker_allows(source: str) -> None:
    assert impurities(source) == []
