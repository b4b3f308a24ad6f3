"""The economy's numbers: every default of docs/economy.md, overridable from a TOML file.

Nothing economic is hard-coded in the rules; they read it from an ``EconomyConfig``. Parsing a
TOML string is pure (``parse_config``); reading the file is the shell's job.
"""

import tomllib
from decimal import Decimal
from typing import Annotated

import msgspec

from exchange.errors import ExchangeError


class AgentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    level: str
    base_rate: Decimal
    primary_llm: str
    preferences: dict[str, str] = {}
    role: str | None = None
    capabilities: list[str] = []


class Contract(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Project contract: the first whose ``pattern`` fully matches the project name wins."""

    name: str
    pattern: str
    multiplier: Decimal
    budget: Decimal


class BonusTier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    multiplier: Decimal
    keywords: list[str]


class LimitsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    burst: Decimal = Decimal(500)
    reserve: Decimal = Decimal(500)
    hourly: Decimal = Decimal(1000)
    daily: Decimal = Decimal(10_000)
    hourly_window_s: int = 3600
    daily_window_s: int = 86_400


class EscrowConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fee_rate: Decimal = Decimal("0.01")
    referral_share: Decimal = Decimal("0.15")
    release_threshold: Decimal = Decimal("0.7")
    dispute_timeout_s: int = 3600
    result_grace_s: int = 60
    performance_step: Decimal = Decimal("0.05")
    # Escrows locked outside tasks, once released or refunded, kept for queries; beyond this
    # many the oldest is forgotten (its totals stay in the swarm metrics).
    settled_escrows_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000


class AuctionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cost_weight: Decimal = Decimal("0.4")
    time_weight: Decimal = Decimal("0.3")
    confidence_weight: Decimal = Decimal("0.3")
    bid_window_ms: int = 2000
    # Finished tasks (with their bids and escrow) kept for ``task show`` and ``tasks``; beyond
    # this many the oldest is forgotten (its totals stay in the swarm metrics), so the state and
    # its snapshots stay bounded however many auctions run. The journal keeps every one.
    finished_tasks_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000


class StigmergyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    strength_max: Decimal = Decimal(10)
    evaporation: Decimal = Decimal("0.95")
    cycle_s: int = 300
    drop_below: Decimal = Decimal("0.01")


class FuturesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Compute futures (docs/economy.md, Compute futures)."""

    # Expiry bounds, seconds from the command that writes or buys the future.
    min_expiry_s: Annotated[int, msgspec.Meta(ge=1)] = 60
    max_expiry_s: Annotated[int, msgspec.Meta(ge=1)] = 30 * 86_400
    # The writer's initial margin, as a share of the notional.
    margin_rate: Decimal = Decimal(1)
    # A margin check calls for margin when the exposure passes this share of the margin held.
    maintenance_share: Decimal = Decimal("0.8")
    margin_check_s: Annotated[int, msgspec.Meta(ge=1)] = 3600
    # Ended futures kept for ``future show``; beyond this many the oldest is forgotten.
    ended_futures_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000


class StakingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Staking (docs/economy.md, Staking): locks, cooling, the stake bonuses, yield, slashing."""

    min_stake: Decimal = Decimal(100)
    lock_min_s: Annotated[int, msgspec.Meta(ge=1)] = 86_400
    lock_max_s: Annotated[int, msgspec.Meta(ge=1)] = 31_536_000
    cooling_s: Annotated[int, msgspec.Meta(ge=0)] = 86_400
    # The active stake at which the ballot and bid bonuses are full.
    stake_full: Decimal = Decimal(10_000)
    # The auction score bonus at full stake: small, so stake breaks near-ties but never buys
    # an auction from a clearly better offer.
    bid_bonus: Decimal = Decimal("0.05")
    yield_period_s: Annotated[int, msgspec.Meta(ge=60)] = 86_400
    yield_share: Decimal = Decimal("0.5")
    slash_share: Decimal = Decimal("0.1")

    def __post_init__(self) -> None:
        _between("staking", self, min_stake=(0, None), stake_full=(0, None))
        _between("staking", self, bid_bonus=(0, 1), yield_share=(0, 1), slash_share=(0, 1))
        if self.lock_min_s > self.lock_max_s:
            raise ValueError("staking: expected lock_min_s <= lock_max_s")


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The metering gateway (docs/gateway.md). ``required``: agents may not report their own
    inference (``llm``, ``llm.authorize`` are refused ``gateway_required``), so the only way to
    spend on a model is through the gateway, which charges what the upstream reports. Holds
    opened before it was set may still be settled."""

    required: bool = False


class LendingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Loans between agents (docs/economy.md, Lending): bounds, offers, defaults, recovery."""

    rate_max_per_day: Decimal = Decimal("0.05")
    term_min_s: Annotated[int, msgspec.Meta(ge=1)] = 3600
    term_max_s: Annotated[int, msgspec.Meta(ge=1)] = 2_592_000
    offer_ttl_s: Annotated[int, msgspec.Meta(ge=1)] = 3600
    default_penalty: Decimal = Decimal("0.1")
    recovery_share: Decimal = Decimal("0.5")
    ended_loans_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000

    def __post_init__(self) -> None:
        _between("lending", self, rate_max_per_day=(0, None), default_penalty=(0, None))
        _between("lending", self, recovery_share=(0, 1))
        if self.term_min_s > self.term_max_s:
            raise ValueError("lending: expected term_min_s <= term_max_s")


def _between(table: str, config: object, **bounds: tuple[int, int | None]) -> None:
    """Each named Decimal field within [low, high] (no high: any value from low); msgspec can
    bound ints but not Decimals."""
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if not value.is_finite() or value < low or (high is not None and value > high):
            upper = "" if high is None else f" and at most {high}"
            raise ValueError(f"{table}.{name}: expected at least {low}{upper}, got {value}")


def _default_agents() -> list[AgentSpec]:
    return [
        AgentSpec(id="claude", level="L7", base_rate=Decimal(150), primary_llm="claude-opus"),
        AgentSpec(
            id="builder",
            level="L6",
            base_rate=Decimal(120),
            primary_llm="qwen2.5-coder",
            preferences={"planning": "claude-sonnet"},
        ),
        AgentSpec(id="lambda", level="L6", base_rate=Decimal(110), primary_llm="claude-opus"),
        AgentSpec(
            id="spark",
            level="L6",
            base_rate=Decimal(115),
            primary_llm="claude-sonnet",
            preferences={"chat": "llama3.2"},
        ),
        AgentSpec(id="observer", level="L5", base_rate=Decimal(100), primary_llm="gemini-pro"),
        AgentSpec(id="zero", level="L5", base_rate=Decimal(90), primary_llm="llama3.2"),
    ]


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model priced apart for prompt (``input``) and completion (``output``) tokens, in tokens
    per 1,000: ``gpt-x = { input = 2.5, output = 10 }``. A bare number is one price for both."""

    input: Decimal
    output: Decimal


def input_price(price: "Decimal | ModelPrice") -> Decimal:
    """The price per 1,000 prompt tokens (a single price is both)."""
    return price.input if isinstance(price, ModelPrice) else price


def output_price(price: "Decimal | ModelPrice") -> Decimal:
    """The price per 1,000 completion tokens (a single price is both)."""
    return price.output if isinstance(price, ModelPrice) else price


def _default_models() -> dict[str, "Decimal | ModelPrice"]:
    """Price in tokens per 1,000 inference tokens."""
    return {
        "claude-opus": Decimal(15),
        "claude-sonnet": Decimal(3),
        "gemini-pro": Decimal(2),
        "llama3.2": Decimal("0.1"),
        "qwen2.5-coder": Decimal("0.1"),
    }


def _default_contracts() -> list[Contract]:
    return [
        Contract(
            name="nexushive-setup",
            pattern="nexushive-setup",
            multiplier=Decimal("2.0"),
            budget=Decimal(50_000),
        ),
        Contract(
            name="claude-monitor",
            pattern="claude-monitor",
            multiplier=Decimal("1.5"),
            budget=Decimal(30_000),
        ),
        Contract(
            name="scheme-*", pattern="scheme-.*", multiplier=Decimal("1.8"), budget=Decimal(40_000)
        ),
        Contract(name="default", pattern=".*", multiplier=Decimal("1.0"), budget=Decimal(10_000)),
    ]


def _default_bonuses() -> list[BonusTier]:
    return [
        BonusTier(multiplier=Decimal("2.0"), keywords=["hotfix", "critical", "urgent", "security"]),
        BonusTier(multiplier=Decimal("1.5"), keywords=["fix", "bug", "patch", "resolve"]),
        BonusTier(multiplier=Decimal("1.3"), keywords=["test", "spec", "coverage"]),
        BonusTier(multiplier=Decimal("1.2"), keywords=["refactor", "cleanup", "optimize"]),
        BonusTier(multiplier=Decimal("1.1"), keywords=["docs", "readme", "documentation"]),
    ]


def _default_priorities() -> dict[str, Decimal]:
    return {
        "P1": Decimal(500),
        "P2": Decimal(300),
        "P3": Decimal(150),
        "P4": Decimal(75),
        "P5": Decimal(50),
    }


def _default_issue_types() -> dict[str, Decimal]:
    return {
        "security": Decimal("2.0"),
        "bug": Decimal("1.5"),
        "feature": Decimal("1.0"),
        "task": Decimal("0.8"),
        "docs": Decimal("0.6"),
        "chore": Decimal("0.5"),
    }


class GovernanceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who may change the economy by vote, and within which bounds (docs/economy.md, Governance).

    A vote whose action changes a parameter (a model's price, a contract, an agent's limits) is
    held by a fixed electorate, never one the proposer picks: the ``council`` when it names agents,
    otherwise every registered agent, each weighted by its performance.
    """

    council: list[str] = []
    # The least share of the electorate's weight (performance) whose ballots, abstentions
    # included, make a parameter vote count.
    quorum_share: Decimal = Decimal("0.5")
    # A bare majority cannot change the economy.
    parameter_kinds: list[str] = msgspec.field(
        default_factory=lambda: ["supermajority", "consensus"]
    )
    # An approved action proposed by an agent waits for the operator's ``vote.ratify``.
    ratification: bool = True
    # Tokens per 1,000 inference tokens a vote may set a model's price to.
    price_min: Decimal = Decimal("0.001")
    price_max: Decimal = Decimal(1000)
    # The range a vote may set a contract's multiplier to.
    multiplier_min: Decimal = Decimal("0.01")
    multiplier_max: Decimal = Decimal(100)


class EconomyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    opening_balance: Decimal = Decimal(10_000)
    agents: list[AgentSpec] = msgspec.field(default_factory=_default_agents)
    models: dict[str, Decimal | ModelPrice] = msgspec.field(default_factory=_default_models)
    contracts: list[Contract] = msgspec.field(default_factory=_default_contracts)
    commit_bonuses: list[BonusTier] = msgspec.field(default_factory=_default_bonuses)
    issue_priorities: dict[str, Decimal] = msgspec.field(default_factory=_default_priorities)
    issue_types: dict[str, Decimal] = msgspec.field(default_factory=_default_issue_types)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    escrow: EscrowConfig = msgspec.field(default_factory=EscrowConfig)
    auction: AuctionConfig = msgspec.field(default_factory=AuctionConfig)
    stigmergy: StigmergyConfig = msgspec.field(default_factory=StigmergyConfig)
    governance: GovernanceConfig = msgspec.field(default_factory=GovernanceConfig)
    staking: StakingConfig = msgspec.field(default_factory=StakingConfig)
    lending: LendingConfig = msgspec.field(default_factory=LendingConfig)
    futures: FuturesConfig = msgspec.field(default_factory=FuturesConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    # Settled or voided LLM authorizations kept (a settle sent again is told the authorization
    # is closed); beyond this many the oldest is forgotten, so holds do not grow with every
    # inference ever paid.
    closed_authorizations_kept: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Closed vote proposals (with their ballots and tally) kept for ``vote show``; beyond this
    # many the oldest is forgotten (the journal keeps it).
    closed_proposals_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Closed pools kept for ``pool show``; beyond this many the oldest is forgotten (its account,
    # emptied at close, stays in the book).
    closed_pools_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Ended coalitions kept; beyond this many the oldest is forgotten (the coalition-stability
    # metric keeps counting it).
    ended_coalitions_kept: Annotated[int, msgspec.Meta(ge=1)] = 1000


_MERGED_TABLES = ("models", "issue_priorities", "issue_types")


class ConfigError(ExchangeError, ValueError):
    """The TOML text is not a valid economy configuration; the message names the bad field."""


def parse_config(toml_text: str) -> EconomyConfig:
    """Parses TOML (floats read exactly as Decimal) into a config; absent keys keep defaults.

    Raises ``ConfigError`` naming the bad field.
    """
    try:
        raw = tomllib.loads(toml_text, parse_float=Decimal)
        # Price and reward tables merge key by key over the defaults, so `[models]` with one
        # entry changes that price and keeps the others.
        defaults = msgspec.to_builtins(EconomyConfig())
        for table in _MERGED_TABLES:
            if isinstance(raw.get(table), dict):
                raw[table] = {**defaults[table], **raw[table]}
        return msgspec.convert(raw, EconomyConfig)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(str(exc)) from exc


def default_toml() -> str:
    """The default configuration as TOML, for users to copy and change."""
    return _to_toml(msgspec.to_builtins(EconomyConfig()))


def config_toml(config: EconomyConfig) -> str:
    """``config`` as TOML that ``parse_config`` reads back equal (``exchange import`` writes it)."""
    return _to_toml(msgspec.to_builtins(config))


def _to_toml(data: dict[str, object]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, object]]] = []
    arrays: list[tuple[str, list[dict[str, object]]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines.extend(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None
        )
    for key, items in arrays:
        for item in items:
            lines.append(f"\n[[{key}]]")
            # TOML has no null: an absent key keeps the default (None).
            lines.extend(
                f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items() if v is not None
            )
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        # Decimals arrive from to_builtins as strings; write them as TOML numbers.
        try:
            Decimal(value)
        except ArithmeticError:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    return str(value)
