"""The names of the states a reply or a swarm body reports: tasks, escrows, vote proposals and
their actions, coalitions. Published as enums in the JSON Schema (``schema/``).

The state machines themselves belong to the exchange (``exchange.core.states``); protocols must
not import it, so the names are spelled here and a test holds the two lists equal. Decoding stays
a plain ``str``: a client built today still reads a reply that names a state added later.
"""

from typing import Annotated, Final

import msgspec

TASK_STATES: Final = (
    "open",
    "awarded",
    "informed",
    "disputed",
    "completed",
    "failed",
    "expired",
    "refunded",
    "unawarded",
    "cancelled",
)
ESCROW_STATES: Final = ("locked", "disputed", "released", "refunded")
PROPOSAL_STATES: Final = ("open", "closed")
# "" is a proposal with no action.
ACTION_STATES: Final = (
    "",
    "pending",
    "awaiting_ratification",
    "applied",
    "not_applied",
    "vetoed",
)
COALITION_STATES: Final = ("active", "intact", "broken")


def _named(names: tuple[str, ...], what: str) -> msgspec.Meta:
    return msgspec.Meta(description=f"the {what}'s state", extra_json_schema={"enum": list(names)})


TaskStateName = Annotated[str, _named(TASK_STATES, "task")]
EscrowStateName = Annotated[str, _named(ESCROW_STATES, "escrow")]
ProposalStateName = Annotated[str, _named(PROPOSAL_STATES, "proposal")]
ActionStateName = Annotated[str, _named(ACTION_STATES, "proposal action")]
CoalitionStateName = Annotated[str, _named(COALITION_STATES, "coalition")]
