"""Events the daemon publishes after a batch is durable: one per posting, to each agent it touches.

Owns: turning a committed journal entry into its events (``protocols.events.PostingEvent``, the
body of ``exchange.event.<agent>.posting``). Must not: publish (the pipeline does), or describe
postings of system accounts (``@mint``, ``@escrow``...) to anyone but the agents on the other side.

Events skip unknown fields when decoded (tolerant readers), like every event of the protocol.
"""

from collections.abc import Iterator
from typing import Final

import msgspec

from exchange.journal import Entry
from protocols import subjects
from protocols.amounts import format_micro
from protocols.events import POSTING_EVENT_KIND, PostingEvent
from protocols.ids import is_agent_id

_encoder: Final = msgspec.json.Encoder()


def posting_events(entry: Entry) -> Iterator[tuple[str, bytes]]:
    """(subject, body) for every agent touched by every posting of ``entry``, in order."""
    for idx, posting in enumerate(entry.postings):
        body = _encoder.encode(
            PostingEvent(
                seq=entry.seq,
                idx=idx,
                at_ns=entry.at_ns,
                sender=entry.sender,
                verb=entry.verb,
                debit_account=posting.debit_account,
                credit_account=posting.credit_account,
                amount=format_micro(posting.amount_micro),
                kind=posting.kind,
                memo=posting.memo,
            )
        )
        for account in (posting.debit_account, posting.credit_account):
            if is_agent_id(account):
                yield subjects.event(account, POSTING_EVENT_KIND), body
