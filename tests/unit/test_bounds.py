"""Each layer keeps its own bounds (docs/daemon.md, "Where bounds live"); this checks, by reading
the constants, that they fit together: what the daemon accepts the journal can store and
nats-server can carry, the daemon applies the protocol's bounds instead of restating them, and
what the wire lets through the ledger's rules can compute."""

import typing

import exchange.journal.limits as journal
from exchange.core import shapley, stateless_queries
from exchange.daemon import limits as daemon
from exchange.daemon.natsserver import MAX_PAYLOAD_BYTES_DEFAULT
from protocols import cooperation, ids
from protocols.nesting import MESSAGE_DEPTH_MAX

UTF8_BYTES_PER_CHAR_MAX = 4


def _meta(annotated: object) -> typing.Any:
    """The ``msgspec.Meta`` of an ``Annotated`` type."""
    return typing.get_args(annotated)[1]


def test_a_body_the_daemon_accepts_fits_in_the_journal_and_through_nats() -> None:
    assert daemon.message_bytes_max <= journal.body_bytes_max
    # Below the server's own ceiling, so an oversized body is answered by the exchange
    # (message_too_large), not dropped by the server.
    assert daemon.message_bytes_max < MAX_PAYLOAD_BYTES_DEFAULT


def test_a_batch_the_daemon_commits_is_one_journal_batch() -> None:
    assert daemon.batch_size_max <= journal.batch_entries_max


def test_the_daemon_applies_the_protocols_depth_bound() -> None:
    assert daemon.message_depth_max == MESSAGE_DEPTH_MAX


def test_two_joined_protocol_texts_fit_in_a_journal_memo() -> None:
    text_chars_max = _meta(ids.Text).max_length
    assert 2 * text_chars_max * UTF8_BYTES_PER_CHAR_MAX <= journal.memo_bytes_max


def test_what_a_shapley_query_may_ask_the_sampler_accepts() -> None:
    permutations_max = _meta(
        typing.get_type_hints(cooperation.ShapleyQuery, include_extras=True)["permutations"]
    ).le
    assert permutations_max <= shapley.PERMUTATIONS_MAX
    assert stateless_queries.SHAPLEY_QUERY_PLAYERS_MAX <= shapley.PLAYERS_SAMPLED_MAX
