"""Every verb the wire accepts reaches a handler, and a command that fires a burst of timers
(the first one after a long outage) still fits in one journal entry and replays."""

from pathlib import Path

import msgspec

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon.recovery import entry_of, recover
from exchange.journal import Journal
from protocols import commands as c
from protocols import registry
from protocols.units import NS_PER_S, S_PER_HOUR


def test_every_registered_command_and_query_has_a_handler() -> None:
    exchange = Exchange(EconomyConfig())
    handled = exchange.ledger.handled_commands()
    missing = sorted(v for v, t in registry.COMMANDS.items() if t not in handled)
    assert missing == [], f"commands with no handler: {missing}"
    answered = exchange.answered_queries()
    missing = sorted(v for v, t in registry.QUERIES.items() if t not in answered)
    assert missing == [], f"queries with no answer: {missing}"


def test_a_burst_of_expiring_holds_is_one_journal_entry_that_replays(tmp_path: Path) -> None:
    config = EconomyConfig()
    exchange = Exchange(config)
    entries = []
    for outcome, command in zip(exchange.genesis(now_ns=1), _genesis(config), strict=True):
        entries.append(
            entry_of(
                at_ns=1, sender="admin", verb="agent.register", command=command, outcome=outcome
            )
        )
    holds = 1500
    for i in range(holds):
        agent = config.agents[i % len(config.agents)].id
        command = c.LlmAuthorize(
            request_id=f"a{i}", task_type="chat", tokens=1000, model="llama3.2", timeout_s=60
        )
        outcome = exchange.apply(agent, command, now_ns=2)
        assert outcome.ok, outcome.reply
        entries.append(
            entry_of(at_ns=2, sender=agent, verb="llm.authorize", command=command, outcome=outcome)
        )
    tick = c.Tick(request_id="t")
    later_ns = 2 + S_PER_HOUR * NS_PER_S
    outcome = exchange.apply("exchange", tick, now_ns=later_ns)
    assert len(outcome.postings) == holds
    entries.append(
        entry_of(at_ns=later_ns, sender="exchange", verb="tick", command=tick, outcome=outcome)
    )
    with Journal.open(tmp_path / "journal.sqlite") as journal:
        journal.append_batch(entries)
    with Journal.open(tmp_path / "journal.sqlite", read_only=True) as journal:
        replayed = recover(journal, config).exchange
    assert replayed.digest() == exchange.digest()
    assert replayed.ledger.book.balance("@escrow") == 0
    assert msgspec.json.decode(outcome.reply)["ok"] is True
    assert sum(1 for h in replayed.ledger.holds.values() if h.state == "voided") == holds


def _genesis(config: EconomyConfig) -> list[c.RegisterAgent]:
    from exchange.core.machine import genesis_commands

    return genesis_commands(config)
