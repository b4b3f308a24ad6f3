"""The core is pure: parse every module under exchange/core with ``ast`` and fail on any import of
a clock, randomness (``random``, ``secrets``, ``numpy.random``, also reached as ``np.random``), the
environment, I/O or concurrency, and on any call to ``open``."""

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
        # numpy itself is allowed (the Shapley arrays); its random generators are not: their
        # streams may change between numpy versions, and sampling draws from a seeded counter.
        "numpy.random",
    }
)
MODULES = sorted(CORE.rglob("*.py"))


def _forbidden(module: str) -> bool:
    """Whether ``module`` is a forbidden module or inside one (``os.path``, ``numpy.random.x``)."""
    parts = module.split(".")
    return any(".".join(parts[:end]) in FORBIDDEN for end in range(1, len(parts) + 1))


def _numpy_aliases(tree: ast.Module) -> set[str]:
    """The names ``numpy`` is bound to by ``import numpy [as np]`` anywhere in the module."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "numpy"
    }


def impurities(source: str) -> list[str]:
    """Every forbidden import, ``np.random`` use or ``open``/``__import__`` call, with its line."""
    found = []
    tree = ast.parse(source)
    numpy_names = _numpy_aliases(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt | ast.expr):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if not _forbidden(node.module):
                # ``from numpy import random`` imports the module numpy.random.
                names = [f"{node.module}.{alias.name}" for alias in node.names]
        found += [f"line {node.lineno}: imports {name}" for name in names if _forbidden(name)]
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "random"
            and isinstance(node.value, ast.Name)
            and node.value.id in numpy_names
        ):
            found.append(f"line {node.lineno}: uses {node.value.id}.random")
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
        "import numpy as np\nrng = np.random.default_rng(1)",
        "import numpy\nnumpy.random.permutation(3)",
        "import numpy.random",
        "from numpy import random",
        "from numpy.random import default_rng",
        "from numpy import float64, random as npr",
        "import secrets",
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
        "import numpy as np\nx = np.arange(3)",
        "from numpy import uint64",
        "import numpy.typing as npt",
        "randomness = 1\nx.random",
    ],
)
def test_the_checker_allows(source: str) -> None:
    assert impurities(source) == []
