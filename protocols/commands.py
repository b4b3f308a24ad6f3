"""Commands: requests that change the exchange's state, on ``exchange.cmd.<sender>.<verb>``.

The sender is never a field: it is the subject's ``<sender>`` token, which the NATS server lets a
client publish only under its own id. Every command carries ``request_id`` (idempotency).

Commands that move money forbid unknown fields, so a misspelt field is refused rather than
silently ignored. The others skip unknown fields for forward compatibility. Amount fields are
``Decimal`` tokens (JSON string or number, at most 6 decimals); the ledger converts them to
integer micro-tokens and refuses what does not fit.
"""

from decimal import Decimal
from typing import Annotated, ClassVar, Final

import msgspec

from protocols.ids import AgentRef, ModelName, Name, RequestId, Text, Token
from protocols.units import S_PER_DAY

InferenceTokens = Annotated[int, msgspec.Meta(gt=0, le=100_000_000)]
InferenceTokensOrZero = Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]
TimeoutSeconds = Annotated[int, msgspec.Meta(gt=0, le=7 * S_PER_DAY)]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    # Whether the ledger records a success under (sender, request_id) to answer a retry with the
    # same reply. Commands the exchange makes itself (ticks, observed signals) are never retried.
    remembered: ClassVar[bool] = True
    # Whether the timers due by the command's stamp fire before it is applied (every command but
    # the one that removes a timer whose firing failed).
    fires_timers: ClassVar[bool] = True
    request_id: RequestId


class StrictCommand(Command, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A command that moves money: unknown fields are refused."""


class LimitsSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-agent rate limits in tokens; a missing field keeps the configured default."""

    burst: Decimal | None = None
    reserve: Decimal | None = None
    hourly: Decimal | None = None
    daily: Decimal | None = None


class RegisterAgent(StrictCommand, frozen=True, kw_only=True):
    """Adds an agent and mints its opening balance. Sent by ``admin``."""

    agent: AgentRef
    base_rate: Decimal
    primary_llm: ModelName
    level: Annotated[str, msgspec.Meta(max_length=8)] = "L5"
    preferences: dict[Token, ModelName] = {}
    role: Token | None = None
    capabilities: list[Token] = []
    limits: LimitsSpec | None = None


class Transfer(StrictCommand, frozen=True, kw_only=True):
    to: AgentRef
    amount: Decimal
    memo: Text = ""


class Award(StrictCommand, frozen=True, kw_only=True):
    """Mints tokens to an agent for work done elsewhere. Sent by ``admin``."""

    agent: AgentRef
    amount: Decimal
    source: Name
    description: Text = ""


class Commit(StrictCommand, frozen=True, kw_only=True):
    """Rewards a git commit. ``author`` is an email (its local part is the agent) or an agent id."""

    author: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    project: Name
    message: Text
    sha: Annotated[str, msgspec.Meta(min_length=4, max_length=64)] | None = None


class IssueClose(StrictCommand, frozen=True, kw_only=True):
    """Rewards a closed issue, once per ``issue_id``. Priority ``P1``..``P5``."""

    issue_id: Name
    agent: AgentRef
    priority: Annotated[str, msgspec.Meta(max_length=8)]
    issue_type: Annotated[str, msgspec.Meta(max_length=32)]


class LlmRequest(StrictCommand, frozen=True, kw_only=True):
    """Pays for inference in one step: ``tokens`` inference tokens at the model's price."""

    task_type: Token
    tokens: InferenceTokens
    model: ModelName | None = None


class LlmAuthorize(StrictCommand, frozen=True, kw_only=True):
    """Holds the estimated cost of inference; settle or let it expire after ``timeout_s``."""

    task_type: Token
    tokens: InferenceTokens
    model: ModelName | None = None
    timeout_s: TimeoutSeconds = 300


class LlmSettle(StrictCommand, frozen=True, kw_only=True):
    """Posts the actual cost of an authorization (``tokens`` actually used) and frees the rest."""

    authorization_id: Name
    tokens: InferenceTokensOrZero


class RatesSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-agent request limits the metering gateway enforces (docs/gateway.md): requests and
    tokens per sliding minute, and the models the agent may call. A missing field keeps the
    agent's current value; 0 removes a per-minute limit, an empty ``models`` allows every model."""

    rpm: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] | None = None
    tpm: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000_000)] | None = None
    models: Annotated[list[ModelName], msgspec.Meta(max_length=256)] | None = None


class SetLimits(StrictCommand, frozen=True, kw_only=True):
    """Changes an agent's rate limits. Sent by ``admin`` (or applied by an approved vote)."""

    agent: AgentRef
    limits: LimitsSpec
    rates: RatesSpec | None = None


class GatewayAuthorize(StrictCommand, frozen=True, kw_only=True):
    """The metering gateway holds the worst-case cost of one request an agent makes: its prompt
    tokens (an upper bound) and ``max_tokens`` of output, at the model's input and output prices.
    Admitted only within the agent's model allowlist, requests and tokens per minute, and money
    limits. Sent by ``gateway`` only."""

    agent: AgentRef
    model: ModelName
    prompt_tokens: InferenceTokensOrZero
    max_tokens: InferenceTokensOrZero
    timeout_s: TimeoutSeconds = 300


class GatewaySettle(StrictCommand, frozen=True, kw_only=True):
    """Charges a gateway authorization by the upstream's reported usage; the rest is released."""

    authorization_id: Name
    prompt_tokens: InferenceTokensOrZero
    completion_tokens: InferenceTokensOrZero


class GatewayRelease(StrictCommand, frozen=True, kw_only=True):
    """Releases a gateway authorization whose upstream call failed or was cancelled: nothing is
    charged, and its tokens leave the agent's tokens-per-minute window (the request still counts
    as one request)."""

    authorization_id: Name
    reason: Text = ""


QuotaRequests = Annotated[int, msgspec.Meta(ge=1, le=1000)]
QuotaTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
AdmitSeconds = Annotated[int, msgspec.Meta(ge=1, le=60)]


class GatewayQuota(StrictCommand, frozen=True, kw_only=True):
    """Grants the metering gateway a quota of an agent's requests to one model, which it admits
    without asking until ``admit_s`` has passed: up to ``requests`` requests using up to
    ``tokens`` tokens (prompt bounds plus ``max_tokens``) in all, their worst-case cost held.
    Less may be granted (what the agent's minute and money leave), never less than one request
    of ``min_tokens``, else refused as ``gateway.authorize`` would refuse that request. The
    quota's requests and tokens count in the agent's minute from the end of its admission period.
    Settled once by ``gateway.quota_settle``, or voided at ``timeout_s``. Sent by ``gateway``
    only."""

    agent: AgentRef
    model: ModelName
    requests: QuotaRequests
    tokens: QuotaTokens
    min_tokens: QuotaTokens
    admit_s: AdmitSeconds = 2
    timeout_s: TimeoutSeconds = 300


class GatewayQuotaSettle(StrictCommand, frozen=True, kw_only=True):
    """Charges each request admitted against a quota its reported usage, ``[prompt_tokens,
    completion_tokens]`` (``[0, 0]``: a request whose upstream call failed), and gives back the
    rest: the money held, and to the agent's minute the requests and tokens not used."""

    quota_id: Name
    usage: Annotated[
        list[tuple[InferenceTokensOrZero, InferenceTokensOrZero]], msgspec.Meta(max_length=1000)
    ]


class PoolCreate(StrictCommand, frozen=True, kw_only=True):
    """Opens a team pool; the sender is its creator and first member."""

    name: Name
    min_contribution: Decimal
    target: Decimal | None = None


class PoolJoin(Command, frozen=True, kw_only=True):
    pool_id: Name


class PoolContribute(StrictCommand, frozen=True, kw_only=True):
    pool_id: Name
    amount: Decimal


class PoolSpend(StrictCommand, frozen=True, kw_only=True):
    """Pays for inference from the pool; contributors are credited pro rata."""

    pool_id: Name
    model: ModelName
    tokens: InferenceTokens
    description: Text = ""


class PoolClose(StrictCommand, frozen=True, kw_only=True):
    """Closes the pool and refunds what is left to contributors pro rata."""

    pool_id: Name


class Tick(Command, frozen=True, kw_only=True):
    """Lets the exchange clock fire due timers. Sent only by the exchange itself."""

    remembered: ClassVar[bool] = False


class DropTimer(Command, frozen=True, kw_only=True):
    """Removes one timer that failed while firing, so that it cannot fail every later command.

    Made only by the exchange itself, after a broken invariant in that timer's rule (journaled,
    so a replay drops it at the same point). Applied without firing the timers due first.
    """

    remembered: ClassVar[bool] = False
    fires_timers: ClassVar[bool] = False
    deadline_ns: int
    timer_seq: int
    kind: Annotated[str, msgspec.Meta(max_length=64)]
    ref: Annotated[str, msgspec.Meta(max_length=256)]


class ImportOpening(StrictCommand, frozen=True, kw_only=True):
    """Opens an imported agent's balance from ``@import`` (``exchange import``; docs/economy.md,
    Import), with the earned and spent totals it brings. Sent by ``admin`` (like ``award``, it
    creates tokens: from ``@import`` instead of ``@mint``)."""

    agent: AgentRef
    amount: Decimal
    earned: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)
    source: Text = ""


# The source's account names as ``import.history`` carries them: printable ASCII without spaces
# (agent ids, ``@mint``, ``@llm.<model>``, ``@pool.<id>``, ``@stake.<agent>``...).
ImportedAccount = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[!-~]+$(?!\n)")
]
ImportedKind = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
IMPORT_BATCH_MAX: Final = 1000


class ImportedPosting(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One posting of the source exchange's export, as it was there: its journal entry (``seq``),
    its time, its two accounts, its amount, kind and memo."""

    seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    at_ns: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    debit: ImportedAccount
    credit: ImportedAccount
    amount: Decimal
    kind: ImportedKind
    memo: Text = ""


class ImportedTotals(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an imported agent earned and spent in the source exchange (added to its totals)."""

    agent: AgentRef
    earned: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)


class ImportHistory(StrictCommand, frozen=True, kw_only=True):
    """Replays a batch of an imported exchange's postings, in their original order, by double
    entry (``exchange import``; docs/economy.md, Import): an account that is not an imported
    agent is ``@import``, a posting between two such accounts is skipped, the kind is kept and
    the memo names the original entry, time and accounts. Refused whole if any posting would take
    an agent below 0. ``totals`` adds to agents' earned and spent totals. Sent by ``admin``."""

    postings: Annotated[list[ImportedPosting], msgspec.Meta(max_length=IMPORT_BATCH_MAX)] = []
    totals: Annotated[list[ImportedTotals], msgspec.Meta(max_length=IMPORT_BATCH_MAX)] = []
    source: Text = ""
