"""Bad input on every subject the daemon takes is refused with a stable code while the daemon stays
up and the state digest does not move. Method: one exchange, every bad message as a request, then
the status and a good command; drops (no reply subject) are observed in the captured log, after a
later request on the same subscription has been answered (one loop serves it, in order).
"""

import json
from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import client_for, run_cli, running_exchange, status_of
from structlog.testing import capture_logs

from exchange.daemon import limits
from protocols import routes as swarm_routes

pytestmark = pytest.mark.anyio

GOOD_TRANSFER = b'{"request_id": "r-1", "to": "zero", "amount": "1"}'
OVERSIZE = (
    b'{"request_id": "r-2", "to": "zero", "amount": "1", "memo": "'
    + (b"x" * (limits.message_bytes_max + 1))
    + b'"}'
)

# (subject, body, expected code, expected path or None when any).
BAD_MESSAGES: list[tuple[str, bytes, str, str | None]] = [
    ("exchange.cmd.claude.transfer", b'{"to": ', "invalid_message", "$"),
    ("exchange.cmd.claude.transfer", b"\xff\xfe{}", "invalid_message", "$"),
    ("exchange.cmd.claude.transfer", b"[]", "invalid_message", "$"),
    ("exchange.cmd.claude.transfer", b"", "invalid_message", "$"),
    (
        "exchange.cmd.claude.transfer",
        b'{"request_id": "r-3", "to": "zero", "amount": [1]}',
        "invalid_message",
        "$.amount",
    ),
    (
        "exchange.cmd.claude.transfer",
        b'{"request_id": "r-4", "to": 7, "amount": "1"}',
        "invalid_message",
        "$.to",
    ),
    (
        "exchange.cmd.claude.transfer",
        b'{"request_id": "r-5", "to": "zero", "amout": "1"}',
        "invalid_message",
        "$",
    ),
    ("exchange.cmd.claude.transfer", b'{"request_id": "r-6"}', "invalid_message", "$"),
    (
        "exchange.cmd.claude.transfer",
        b'{"request_id": "", "to": "zero", "amount": "1"}',
        "invalid_message",
        "$.request_id",
    ),
    (
        "exchange.cmd.admin.limits.set",
        b'{"request_id": "r-7", "agent": "zero", "limits": {"burst": "1", "nope": 1}}',
        "invalid_message",
        "$.limits",
    ),
    ("exchange.cmd.claude.teleport", GOOD_TRANSFER, "unknown_verb", None),
    ("exchange.cmd.claude", GOOD_TRANSFER, "unknown_verb", None),
    ("exchange.cmd.Claude!.transfer", GOOD_TRANSFER, "invalid_agent_id", None),
    ("exchange.cmd." + "a" * 65 + ".transfer", GOOD_TRANSFER, "invalid_agent_id", None),
    ("exchange.cmd.claude.transfer", OVERSIZE, "message_too_large", None),
    ("exchange.query.balance", b'{"agent": 5}', "invalid_message", "$.agent"),
    ("exchange.query.history", b'{"agent": "zero", "limit": 0}', "invalid_message", "$.limit"),
    ("exchange.query.history", b"{", "invalid_message", "$"),
    ("exchange.query.gossip", b"{}", "unknown_verb", None),
    ("exchange.query.balance", OVERSIZE, "message_too_large", None),
    ("swarm.task.t-1.propose.claude", b"{bad", "invalid_message", "$"),
    (
        "swarm.task.t-1.propose.claude",
        b'{"cost": "1", "time_ms": "soon", "confidence": 0.5}',
        "invalid_message",
        "$.time_ms",
    ),
    ("swarm.vote.p-1.cast.claude", b"[1, 2]", "invalid_message", "$"),
    ("swarm.task.t-1.propose.CLAUDE", b"{}", "invalid_message", None),
    ("swarm.signal.claude.bogus.btc", b'{"confidence": 0.5, "direction": "long"}', "", None),
    ("swarm.task.t-1.inform.claude", OVERSIZE, "message_too_large", None),
]


async def test_bad_input_on_every_subject_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        for subject, body, code, path in BAD_MESSAGES:
            msg = await admin.nc.request(subject, body, timeout=10)
            envelope = msgspec.json.decode(msg.data)
            assert envelope["ok"] is False, (subject, body[:60], envelope)
            error = envelope["error"]
            if code:
                assert error["code"] == code, (subject, body[:60], error)
            assert error["message"], error
            if path is not None:
                assert error.get("path") == path, (subject, body[:60], error)
            assert "Traceback" not in error["message"] and "Error(" not in error["message"]
        after = await status_of(admin)
        assert after["digest"] == before["digest"]
        assert after["commands_applied"] == before["commands_applied"]
        good = await admin.command_envelope("claude", "transfer", {"to": "zero", "amount": "1"})
        assert good.ok, good


# Amount strings outside the published grammar, each of which Decimal(text), so msgspec, takes.
BAD_AMOUNTS = ["1_0", "+1", " 1 ", "1.", ".5", "1E+0", "\u0661", "\uff11"]


async def test_amounts_outside_the_grammar_are_refused_as_invalid_amount(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        for index, text in enumerate(BAD_AMOUNTS):
            transfer = {"request_id": f"bad-{index}", "to": "zero", "amount": text}
            bid = {"cost": text, "time_ms": 5, "confidence": 0.5}
            for subject, body, path in (
                ("exchange.cmd.claude.transfer", transfer, "$.amount"),
                ("swarm.task.t-1.propose.claude", bid, "$.cost"),
            ):
                msg = await admin.nc.request(subject, json.dumps(body).encode(), timeout=10)
                error = msgspec.json.decode(msg.data)["error"]
                assert (error["code"], error.get("path")) == ("invalid_amount", path), (text, error)
                assert 'like "12.5"' in error["message"], error
        # A person typing an amount gets the same refusal: the CLI sends it as typed.
        typed = await run_cli(
            "transfer", "claude", "zero", "1_0", "--data", str(tmp_path / "x"), "--json"
        )
        assert typed.status == 1
        assert typed.json()["error"]["code"] == "invalid_amount"
        after = await status_of(admin)
        assert (after["digest"], after["commands_applied"]) == (
            before["digest"],
            before["commands_applied"],
        )
        for amount in ("12.5", "0.000001", 12.5):
            paid = await admin.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": amount}
            )
            assert paid.ok, (amount, paid)
        minted = await admin.command_envelope(
            "admin", "award", {"agent": "zero", "amount": "1000000000000", "source": "ci"}
        )
        assert minted.ok, minted


async def test_unknown_verbs_are_listed_in_the_refusal(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        command = await admin.command_envelope("claude", "teleport", {})
        query = await admin.query_envelope("gossip")
        assert command.error is not None and query.error is not None
        assert "transfer" in command.error.message and "pool.create" in command.error.message
        assert "balance" in query.error.message and "status" in query.error.message


async def test_a_request_without_a_reply_subject_is_dropped_with_a_log_line(
    tmp_path: Path,
) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        with capture_logs() as logs:
            await admin.nc.publish("exchange.cmd.claude.transfer", GOOD_TRANSFER)
            await admin.nc.publish("exchange.cmd.claude.transfer", b"{")
            # Answered after the two above by the same loop, so they have been handled.
            refused = await admin.command_envelope("claude", "teleport", {})
        assert refused.error is not None
        dropped = [e for e in logs if e["event"] == "message_dropped"]
        assert dropped == [
            {
                "event": "message_dropped",
                "log_level": "info",
                "subject": "exchange.cmd.claude.transfer",
                "reason": "no_reply_subject",
            }
        ]
        silent = [e for e in logs if e["event"] == "message_refused" and not e["replied"]]
        assert [e["code"] for e in silent] == ["invalid_message"]
        after = await status_of(admin)
        assert after["commands_applied"] == before["commands_applied"]


async def test_the_daemon_survives_a_burst_of_garbage(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        answered = 0

        async def garbage(index: int) -> None:
            nonlocal answered
            subject, body, _, _ = BAD_MESSAGES[index % len(BAD_MESSAGES)]
            msg = await admin.nc.request(subject, body, timeout=10)
            assert msgspec.json.decode(msg.data)["ok"] is False
            answered += 1

        async with anyio.create_task_group() as tg:
            for index in range(500):
                tg.start_soon(garbage, index)
        assert answered == 500
        after = await status_of(admin)
        assert (after["digest"], after["commands_applied"]) == (
            before["digest"],
            before["commands_applied"],
        )


# 3,000 levels, 18 KB: msgspec's recursive decoding raised RecursionError on it (no reply).
DEEP_BODIES = (b'{"a":' * 3_000 + b"1" + b"}" * 3_000, b"[" * 3_000 + b"]" * 3_000)
# One subject of every family the exchange subscribes to, and of every swarm subscription.
DEEP_SUBJECTS = (
    "exchange.cmd.claude.transfer",
    "exchange.cmd.claude.heartbeat",
    "exchange.query.balance",
    "exchange.query.status",
    "exchange.query.shapley",
    "swarm.signal.claude.opportunity.btc",
    "swarm.task.t-1.propose.claude",
    "swarm.task.t-1.refuse.claude",
    "swarm.task.t-1.inform.claude",
    "swarm.task.t-1.failure.claude",
    "swarm.vote.p-1.cast.claude",
)


def _matches(subject: str, pattern: str) -> bool:
    tokens, wanted = subject.split("."), pattern.split(".")
    return len(tokens) == len(wanted) and all(
        w in ("*", t) for t, w in zip(tokens, wanted, strict=True)
    )


def test_the_deep_subjects_cover_every_swarm_subscription() -> None:
    for pattern in swarm_routes.SUBSCRIPTIONS:
        assert any(_matches(subject, pattern) for subject in DEEP_SUBJECTS), pattern


async def test_a_body_nested_3000_deep_is_refused_on_every_subject(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        for subject in DEEP_SUBJECTS:
            for body in DEEP_BODIES:
                msg = await admin.nc.request(subject, body, timeout=10)
                envelope = msgspec.json.decode(msg.data)
                assert envelope["ok"] is False, (subject, envelope)
                error = envelope["error"]
                assert (error["code"], error["path"]) == ("invalid_message", "$"), (subject, error)
                assert "3000 levels deep" in error["message"], error
                assert f"at most {limits.message_depth_max}" in error["message"], error
        after = await status_of(admin)
        assert (after["digest"], after["commands_applied"]) == (
            before["digest"],
            before["commands_applied"],
        )


async def test_a_deep_fire_and_forget_message_is_dropped_with_a_log_line(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        with capture_logs() as logs:
            await admin.nc.publish("swarm.signal.claude.opportunity.btc", DEEP_BODIES[0])
            await admin.nc.publish("exchange.query.status", DEEP_BODIES[1])
            # Each subscription's messages are handled in order: once these are answered, the
            # deep ones on the same subscriptions have been handled.
            signal = await admin.nc.request(
                "swarm.signal.claude.opportunity.btc", b'{"confidence": 0.5, "direction": "long"}'
            )
            status = await status_of(admin)
        assert msgspec.json.decode(signal.data) == {"ok": True, "result": {}}, signal.data
        assert status["commands_applied"] > 0
        silent = [e for e in logs if e["event"] == "message_refused" and not e["replied"]]
        assert sorted((e["subject"], e["code"]) for e in silent) == [
            ("exchange.query.status", "invalid_message"),
            ("swarm.signal.claude.opportunity.btc", "invalid_message"),
        ]
