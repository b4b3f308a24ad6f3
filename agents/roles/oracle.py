"""Oracle: publishes ``PriceUpdate`` on ``swarm.price.<asset>``, the feed every other role reads.

Two sources:
- a seeded random walk per asset (``RandomWalk``), one update per asset every ``tick_ms``. Each
  asset drifts in regimes (up, flat, down) that last a random number of ticks, so momentum scouts
  find trends to signal, and noise of ``volatility_bps`` per tick rides on top;
- a CSV file a person gives (``parse_price_csv``), with columns ``asset,price`` (one row every
  ``tick_ms``) or ``at,asset,price`` (``at`` in milliseconds from the start, or an RFC 3339
  time; the spacing between rows is kept). With ``--loop`` it plays again from the start; without,
  the oracle stops once the file is played.

Prices are ``Decimal`` with at most six places. The random walk and the CSV parser are pure; the
worker only times and publishes. In secure mode the oracle needs the server's permission to publish
on ``swarm.price.>`` (see docs/agents.md).
"""

import argparse
import csv
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec

from agents import limits
from agents.config import check_interval_ms
from agents.errors import ConfigError
from agents.prices import BPS_PER_UNIT, quantize
from agents.roles.base import BuiltRole, RoleSpec, parse_decimal, parse_token, parse_tokens
from agents.runtime import WorkerContext
from protocols.swarm import PriceUpdate
from protocols.units import MS_PER_S

# Where a walk starts when the user does not say; any other asset starts at DEFAULT_START_PRICE.
KNOWN_START_PRICES: Final = {
    "BTC": Decimal(50_000),
    "ETH": Decimal(3_000),
    "SOL": Decimal(150),
}
DEFAULT_START_PRICE: Final = Decimal(100)
# A price never falls below one micro-unit, whatever the walk draws.
PRICE_MIN: Final = Decimal(1).scaleb(-limits.decimals_max)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class RandomWalkSettings(msgspec.Struct, frozen=True, kw_only=True):
    volatility_bps: Decimal = Decimal(20)
    trend_bps: Decimal = Decimal(8)
    regime_ticks: int = 25


class RandomWalk:
    """Seeded, regime-switching random walks, one per asset. Pure and deterministic per seed."""

    def __init__(
        self,
        start_prices: dict[str, Decimal],
        settings: RandomWalkSettings,
        rng: random.Random,
    ) -> None:
        assert start_prices, "at least one asset"
        assert settings.regime_ticks >= 1, settings.regime_ticks
        self._settings = settings
        self._rng = rng
        # Insertion order is the publishing order; it is the order the user gave.
        self._prices = {asset: quantize(price) for asset, price in start_prices.items()}
        self._drift_bps = dict.fromkeys(start_prices, Decimal(0))
        self._regime_ticks_left = dict.fromkeys(start_prices, 0)

    def step(self) -> list[tuple[str, Decimal]]:
        """Moves every asset one tick and returns the new prices, in the assets' order."""
        moved = []
        for asset, price in self._prices.items():
            if self._regime_ticks_left[asset] <= 0:
                trend = self._settings.trend_bps
                self._drift_bps[asset] = self._rng.choice((-trend, Decimal(0), trend))
                half = max(1, self._settings.regime_ticks // 2)
                self._regime_ticks_left[asset] = self._rng.randint(
                    half, self._settings.regime_ticks + half
                )
            self._regime_ticks_left[asset] -= 1
            # The noise is drawn as a float and fixed to 4 places before any Decimal arithmetic,
            # so the walk is exact (and the same on every machine) from there on.
            noise_bps = Decimal(f"{self._rng.gauss(0.0, 1.0):.4f}") * self._settings.volatility_bps
            return_bps = self._drift_bps[asset] + noise_bps
            new_price = max(PRICE_MIN, quantize(price * (1 + return_bps / BPS_PER_UNIT)))
            self._prices[asset] = new_price
            moved.append((asset, new_price))
        return moved


class PriceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row to replay: ``offset_ms`` after the start of the replay."""

    offset_ms: int
    asset: str
    price: Decimal


def parse_price_csv(text: str, *, tick_ms: int) -> list[PriceRow]:
    """The rows of a price CSV, with their replay offsets. A header row is optional.

    ``asset,price`` rows are ``tick_ms`` apart; ``at,asset,price`` rows keep the spacing of their
    ``at`` (integer milliseconds, or RFC 3339), which must not go backwards. Prices are rounded
    half-even to six places.

    Raises ConfigError naming the line of the first bad row.
    """
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]
    if rows and [c.strip().lower() for c in rows[0]] in (
        ["asset", "price"],
        ["at", "asset", "price"],
        ["at_ms", "asset", "price"],
    ):
        rows = rows[1:]
    if not rows:
        raise ConfigError("the price CSV has no rows; expected asset,price or at,asset,price")
    if len(rows) > limits.csv_rows_max:
        raise ConfigError(f"the price CSV has more than {limits.csv_rows_max} rows")
    width = len(rows[0])
    if width not in (2, 3):
        raise ConfigError(f"expected 2 columns (asset,price) or 3 (at,asset,price), got {width}")
    parsed: list[PriceRow] = []
    first_at_ms: int | None = None
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ConfigError(f"price CSV row {number} has {len(row)} columns, expected {width}")
        cells = [c.strip() for c in row]
        asset = parse_token(cells[-2], f"price CSV row {number}: asset")
        price = _parse_price(cells[-1], number)
        if width == 2:
            offset_ms = (number - 1) * tick_ms
        else:
            at_ms = _parse_at_ms(cells[0], number)
            first_at_ms = at_ms if first_at_ms is None else first_at_ms
            offset_ms = at_ms - first_at_ms
            if parsed and offset_ms < parsed[-1].offset_ms:
                raise ConfigError(f"price CSV row {number}: at goes backwards ({cells[0]!r})")
        parsed.append(PriceRow(offset_ms=offset_ms, asset=asset, price=price))
    return parsed


def _parse_price(text: str, number: int) -> Decimal:
    value = _parse_any_decimal(text, f"price CSV row {number}: price")
    rounded = quantize(value)
    if rounded <= 0:
        raise ConfigError(f"price CSV row {number}: price must be positive, got {text!r}")
    return rounded


def _parse_any_decimal(text: str, what: str) -> Decimal:
    """A finite decimal of any precision (CSV prices often carry more than six places)."""
    try:
        value = Decimal(text)
    except ArithmeticError as exc:
        raise ConfigError(f"{what} must be a decimal number, got {text!r}") from exc
    if not value.is_finite():
        raise ConfigError(f"{what} must be finite, got {text!r}")
    return value


def _parse_at_ms(text: str, number: int) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"price CSV row {number}: at must be milliseconds or an RFC 3339 time, got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        raise ConfigError(f"price CSV row {number}: at {text!r} has no time zone (add Z)")
    # Integer arithmetic: a float timestamp can be a millisecond off.
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def read_price_csv(path: Path, *, tick_ms: int) -> list[PriceRow]:
    """Reads and parses a price CSV. Raises ConfigError (unreadable, too large, or bad rows)."""
    try:
        with path.open("rb") as file:
            data = file.read(limits.csv_bytes_max + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read price CSV {path}: {exc.strerror}") from exc
    if len(data) > limits.csv_bytes_max:
        raise ConfigError(f"{path} is larger than {limits.csv_bytes_max} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_price_csv(text, tick_ms=tick_ms)


class OracleOptions(msgspec.Struct, frozen=True, kw_only=True):
    tick_ms: int = 1000
    start_prices: dict[str, Decimal] = {}
    walk: RandomWalkSettings = RandomWalkSettings()
    replay: list[PriceRow] | None = None
    loop: bool = False


class OracleWorker:
    """Publishes a random walk (or a replay) on the price subjects."""

    def __init__(self, options: OracleOptions, rng: random.Random) -> None:
        self._options = options
        self._walk = RandomWalk(options.start_prices, options.walk, rng)
        self._published = 0

    async def setup(self, ctx: WorkerContext) -> None:
        if self._options.replay is None:
            ctx.every(self._options.tick_ms, lambda: self._tick(ctx), name="oracle_tick")
        else:
            ctx.start_loop(lambda: self._replay(ctx), name="oracle_replay")

    async def _tick(self, ctx: WorkerContext) -> None:
        for asset, price in self._walk.step():
            await self._publish(ctx, asset, price)

    async def _replay(self, ctx: WorkerContext) -> None:
        rows = self._options.replay
        assert rows is not None
        rounds = 0
        while not ctx.stop_requested:
            started_s = ctx.monotonic_ms() / MS_PER_S
            for row in rows:
                delay_s = started_s + row.offset_ms / MS_PER_S - ctx.monotonic_ms() / MS_PER_S
                if await ctx.wait_stop_requested(delay_s):
                    return
                await self._publish(ctx, row.asset, row.price)
            rounds += 1
            ctx.log.info("replay_finished", rows=len(rows), rounds=rounds)
            if not self._options.loop:
                ctx.request_stop()
                return
            # The next round starts one tick after the last row, not on top of it.
            if await ctx.wait_stop_requested(self._options.tick_ms / MS_PER_S):
                return

    async def _publish(self, ctx: WorkerContext, asset: str, price: Decimal) -> None:
        update = PriceUpdate(asset=asset, price=price, at_ns=ctx.now_ns(), source=ctx.agent_id)
        if await ctx.bus.publish_price(update):
            self._published += 1
            ctx.log.debug("price_published", asset=asset, price=str(price))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--assets",
        default="BTC,ETH,SOL",
        help="comma-separated assets to walk (default: %(default)s)",
    )
    parser.add_argument(
        "--tick-ms", type=int, default=1000, help="time between updates (default: %(default)s)"
    )
    parser.add_argument(
        "--start-price",
        action="append",
        default=[],
        metavar="ASSET=PRICE",
        help="where an asset's walk starts (repeatable; BTC 50000, ETH 3000, SOL 150, else 100)",
    )
    parser.add_argument(
        "--volatility-bps", default="20", help="noise per tick, in bps (default: %(default)s)"
    )
    parser.add_argument(
        "--trend-bps", default="8", help="drift per tick in a trend, in bps (default: %(default)s)"
    )
    parser.add_argument(
        "--regime-ticks",
        type=int,
        default=25,
        help="mean length of a trend or flat regime, in ticks (default: %(default)s)",
    )
    parser.add_argument(
        "--csv", type=Path, help="replay prices from this CSV (asset,price or at,asset,price)"
    )
    parser.add_argument("--loop", action="store_true", help="replay the CSV again and again")


def options_from_args(args: argparse.Namespace) -> OracleOptions:
    """Raises ConfigError for bad options or a bad CSV."""
    check_interval_ms("tick_ms", args.tick_ms)
    if not 1 <= args.regime_ticks <= 1_000_000:
        raise ConfigError(f"regime_ticks must be 1..1000000, got {args.regime_ticks}")
    walk = RandomWalkSettings(
        volatility_bps=parse_decimal(args.volatility_bps, "volatility_bps", positive=False),
        trend_bps=parse_decimal(args.trend_bps, "trend_bps", positive=False),
        regime_ticks=args.regime_ticks,
    )
    assets = parse_tokens(args.assets, "asset")
    given: dict[str, Decimal] = {}
    for item in args.start_price:
        asset, separator, price = item.partition("=")
        if not separator:
            raise ConfigError(f"--start-price takes ASSET=PRICE, got {item!r}")
        given[parse_token(asset.strip(), "asset")] = parse_decimal(price.strip(), "start price")
    # Assets named only in --start-price are walked too, after those in --assets.
    ordered = tuple(dict.fromkeys((*assets, *given)))
    if not ordered:
        raise ConfigError("--assets names no asset")
    start_prices = {
        asset: given.get(asset, KNOWN_START_PRICES.get(asset, DEFAULT_START_PRICE))
        for asset in ordered
    }
    replay = None if args.csv is None else read_price_csv(args.csv, tick_ms=args.tick_ms)
    return OracleOptions(
        tick_ms=args.tick_ms, start_prices=start_prices, walk=walk, replay=replay, loop=args.loop
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    return BuiltRole(worker=OracleWorker(options_from_args(args), rng))


ROLE: Final = RoleSpec(
    name="oracle",
    summary="publish prices on swarm.price.<asset> (seeded random walk or CSV replay)",
    exchange_role="oracle",
    add_arguments=add_arguments,
    build=build,
)
