"""Events the exchange publishes on ``exchange.event.<agent>.<kind>``: what an agent learns about
its own account without asking. Published after the batch that caused them is durable.

Events skip unknown fields when decoded (tolerant readers), like every event of the protocol.
No I/O here: the daemon (``exchange.daemon.events``) makes and publishes them.
"""

from typing import Final

import msgspec

POSTING_EVENT_KIND: Final = "posting"
# Every kind an agent can receive on exchange.event.<agent>.<kind>.
EVENT_KINDS: Final = (POSTING_EVENT_KIND,)


class PostingEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One durable money movement: ``amount`` tokens from ``debit_account`` to ``credit_account``.

    Sent to each agent on either side of it (system accounts such as ``@fees`` get none). ``seq``
    is the journal entry (the command) that caused it, ``idx`` its place in that entry.
    """

    seq: int
    idx: int
    at_ns: int
    sender: str
    verb: str
    debit_account: str
    credit_account: str
    amount: str
    kind: str
    memo: str
