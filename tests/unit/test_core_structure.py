"""The shape every rule module follows (docs/adding-a-command.md), checked so that a forgotten
step fails here rather than at a restart: every command of the wire has one handler in the one
table, every timer kind a rule sets is in the timer table, every rule object that keeps state
owns a part of the snapshot, and a restored exchange is the same exchange.
"""

import re
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from core_support import Harness
from core_support import restored as restore
from test_digest_golden import scenario

from exchange.core.config import EconomyConfig
from exchange.core.machine import DIGEST_LAYOUT, OPTIONAL_PARTS, Exchange, ExchangeSnapshot
from protocols import commands as c
from protocols.registry import COMMANDS

CORE = Path(__file__).resolve().parents[2] / "exchange" / "core"


def _table(ex: Exchange) -> dict[type, Any]:
    return dict(ex.ledger._handlers)


def test_the_command_table_is_the_wire_registry() -> None:
    assert set(_table(Exchange(EconomyConfig()))) == set(COMMANDS.values())


def test_every_timer_kind_a_rule_sets_is_in_the_timer_table() -> None:
    kinds = set(Exchange(EconomyConfig()).ledger._timer_kinds)
    set_in_code = {
        kind
        for path in CORE.glob("*.py")
        for kind in re.findall(r'add_timer\([^)]*?"([a-z_]+)"', path.read_text(), re.DOTALL)
    }
    assert set_in_code and set_in_code <= kinds, set_in_code - kinds


def _keeps_state(value: object) -> bool:
    return isinstance(value, dict | list | deque | set) or (
        hasattr(value, "__dataclass_fields__") or isinstance(value, msgspec.Struct)
    )


def test_every_rule_object_that_keeps_state_owns_a_snapshot_part() -> None:
    ex = Exchange(EconomyConfig())
    owners = {id(h.__self__): h.__self__ for h in _table(ex).values()}
    owners |= {id(f.__self__): f.__self__ for f in ex.ledger._timer_kinds.values()}
    parts = set(ExchangeSnapshot.__struct_fields__)
    name_of = {id(value): name for name, value in vars(ex).items()}
    for owner in owners.values():
        derived = getattr(type(owner), "DERIVED", frozenset())
        kept = [
            attr
            for attr, value in vars(owner).items()
            if attr not in derived and not attr.endswith("config") and _keeps_state(value)
        ]
        if not kept:
            continue  # a stateless rule (earning, spending): its effects are in the ledger's
        name = name_of[id(owner)]
        assert name in parts, (
            f"{type(owner).__name__} keeps {kept} but ExchangeSnapshot has no {name!r} part"
        )
        assert callable(getattr(owner, "snapshot", None)) and callable(
            getattr(owner, "restore", None)
        ), f"{type(owner).__name__} keeps {kept} but has no snapshot()/restore()"


def test_every_part_field_is_in_the_digest_layout() -> None:
    fields = {"stigmergy"}
    for name, kind in zip(
        ExchangeSnapshot.__struct_fields__, ExchangeSnapshot.__annotations__.values(), strict=True
    ):
        if name in ("version", "seq", "now_ns", "signals", *OPTIONAL_PARTS):
            continue  # an optional part is hashed whole, under its own name
        fields |= set(kind.__struct_fields__)
    assert fields == set(DIGEST_LAYOUT)


def test_a_restored_exchange_is_the_same_exchange() -> None:
    """Same snapshot bytes, and the same replies and digests for the commands that follow."""
    h = scenario()
    again = restore(h.ex)
    assert again.snapshot() == h.ex.snapshot()
    twin = Harness()
    twin.ex, twin.now_ns, twin._ids = again, h.now_ns, h._ids
    follow = [
        ("claude", c.Transfer, {"to": "zero", "amount": Decimal(3)}),
        ("zero", c.LlmRequest, {"task_type": "chat", "tokens": 100}),
        ("lambda", c.PoolJoin, {"pool_id": "pool-1"}),
    ]
    for sender, kind, fields in follow:
        ours, theirs = h.send(sender, kind, **fields), twin.send(sender, kind, **fields)
        assert (ours.reply, ours.postings) == (theirs.reply, theirs.postings)
    h.advance(4000)
    twin.advance(4000)
    assert h.tick().reply == twin.tick().reply
    assert h.ex.digest() == twin.ex.digest()
