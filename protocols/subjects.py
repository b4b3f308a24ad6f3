"""Subject builders and parsers: the only place subjects are spelt (docs/protocol-guide.md)."""

from typing import Final, NamedTuple

CMD_PREFIX: Final = "exchange.cmd"
QUERY_PREFIX: Final = "exchange.query"
EVENT_PREFIX: Final = "exchange.event"

CMD_WILDCARD: Final = "exchange.cmd.>"
QUERY_WILDCARD: Final = "exchange.query.>"
SIGNAL_WILDCARD: Final = "swarm.signal.>"
TASK_WILDCARD: Final = "swarm.task.*.*.*"
VOTE_CAST_WILDCARD: Final = "swarm.vote.*.cast.*"


def command(sender: str, verb: str) -> str:
    return f"{CMD_PREFIX}.{sender}.{verb}"


def query(verb: str) -> str:
    return f"{QUERY_PREFIX}.{verb}"


def event(agent: str, kind: str) -> str:
    return f"{EVENT_PREFIX}.{agent}.{kind}"


def signal(sender: str, signal_type: str, asset: str) -> str:
    return f"swarm.signal.{sender}.{signal_type}.{asset}"


def task_cfp(task_type: str) -> str:
    return f"swarm.task.cfp.{task_type}"


def task_message(task_id: str, performative: str, sender: str) -> str:
    """propose | refuse | inform | failure from ``sender`` about ``task_id``."""
    return f"swarm.task.{task_id}.{performative}.{sender}"


def task_award(task_id: str) -> str:
    return f"swarm.task.{task_id}.award"


def task_closed(task_id: str) -> str:
    return f"swarm.task.{task_id}.closed"


def task_disputed(task_id: str) -> str:
    return f"swarm.task.{task_id}.disputed"


def vote_open(proposal_id: str) -> str:
    return f"swarm.vote.{proposal_id}.open"


def vote_cast(proposal_id: str, sender: str) -> str:
    return f"swarm.vote.{proposal_id}.cast.{sender}"


def vote_closed(proposal_id: str) -> str:
    return f"swarm.vote.{proposal_id}.closed"


def price(asset: str) -> str:
    return f"swarm.price.{asset}"


class CommandSubject(NamedTuple):
    sender: str
    verb: str


def parse_command(subject: str) -> CommandSubject | None:
    """``exchange.cmd.<sender>.<verb...>`` -> (sender, verb); None when it is not one."""
    parts = subject.split(".", 3)
    if len(parts) != 4 or parts[0] != "exchange" or parts[1] != "cmd" or not parts[2]:
        return None
    return CommandSubject(parts[2], parts[3])


def parse_query(subject: str) -> str | None:
    parts = subject.split(".", 2)
    if len(parts) != 3 or parts[0] != "exchange" or parts[1] != "query":
        return None
    return parts[2]


class SignalSubject(NamedTuple):
    sender: str
    signal_type: str
    asset: str


def parse_signal(subject: str) -> SignalSubject | None:
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "swarm" or parts[1] != "signal":
        return None
    return SignalSubject(parts[2], parts[3], parts[4])


class TaskSubject(NamedTuple):
    task_id: str
    performative: str
    sender: str


def parse_task_message(subject: str) -> TaskSubject | None:
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "swarm" or parts[1] != "task":
        return None
    return TaskSubject(parts[2], parts[3], parts[4])


class VoteSubject(NamedTuple):
    proposal_id: str
    sender: str


def parse_vote_cast(subject: str) -> VoteSubject | None:
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "swarm" or parts[1] != "vote" or parts[3] != "cast":
        return None
    return VoteSubject(parts[2], parts[4])


def inbox_prefix(agent: str) -> str:
    """The reply-inbox prefix an agent must use in secure mode (nats-py: ``inbox_prefix=``).

    The server lets an agent subscribe only below its own prefix, so a request made with the
    default ``_INBOX`` prefix is refused and its reply never arrives.
    """
    return f"_INBOX_{agent}"
