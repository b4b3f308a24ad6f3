"""One exception root: every error class the exchange package defines derives from ExchangeError,
so ``except ExchangeError`` tells an expected failure (with a message that says what to do) from
a bug. A new error family that forgets to derive from it fails here."""

import ast
import importlib
from pathlib import Path

from exchange.errors import ExchangeError

PACKAGE = Path(__file__).resolve().parents[2] / "exchange"


def test_every_error_class_of_the_package_derives_from_the_root() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                cls = getattr(importlib.import_module(module_name), node.name)
                if not issubclass(cls, BaseException):
                    continue  # a value named for what it reports (discovery.ServiceError)
                found.append(cls)
                assert issubclass(cls, ExchangeError), f"{module_name}.{node.name}"
    assert len(found) > 20
