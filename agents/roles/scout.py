"""Scout: watches ``swarm.price.*`` for momentum and emits ``opportunity`` signals.

``MomentumDetector`` (pure) keeps the last ``window_prices`` prices of each asset. When the return
over the window reaches ``threshold_bps`` in either direction it reports an opportunity: direction
``long`` for a rise, ``short`` for a fall, and a confidence from the strength of the move (0.5 at
the threshold, 1.0 at twice the threshold and above). It then forgets the window but its last
price, so the next signal for that asset needs a fresh window of evidence. That is the scout's only
state, bounded per asset, so any number of scouts can run (split the assets between them with
``--assets``).

Signals go to ``swarm.signal.<scout>.opportunity.<asset>`` as seed 2's ``AgentSignal``.
"""

import argparse
import random
from collections import deque
from decimal import Decimal
from typing import Final

import msgspec
from nats.aio.msg import Msg

from agents import limits
from agents.bounded import BoundedDict
from agents.clock import rfc3339
from agents.errors import ConfigError
from agents.prices import BPS_PER_UNIT
from agents.roles.base import BuiltRole, RoleSpec, parse_decimal, parse_token, parse_tokens
from agents.runtime import WorkerContext
from protocols import subjects
from protocols.swarm import AgentSignal, Direction, PriceUpdate

SCANNER: Final = "momentum"
_price_decoder: Final = msgspec.json.Decoder(PriceUpdate)


class Momentum(msgspec.Struct, frozen=True, kw_only=True):
    asset: str
    direction: Direction
    confidence: float
    return_bps: Decimal
    price: Decimal


class MomentumDetector:
    """Return over the last ``window_prices`` prices against a threshold, per asset. Pure."""

    def __init__(self, *, window_prices: int, threshold_bps: Decimal) -> None:
        assert 2 <= window_prices <= limits.momentum_window_prices_max, window_prices
        assert threshold_bps > 0, threshold_bps
        self._window_prices = window_prices
        self._threshold_bps = threshold_bps
        self._windows: BoundedDict[str, deque[Decimal]] = BoundedDict(limits.assets_max)

    def observe(self, asset: str, price: Decimal) -> Momentum | None:
        """Adds a price; returns the momentum found, if the window now shows one."""
        if not price.is_finite() or price <= 0:
            return None
        window = self._windows.get(asset)
        if window is None:
            window = deque(maxlen=self._window_prices)
            self._windows[asset] = window
        window.append(price)
        if len(window) < self._window_prices:
            return None
        first, last = window[0], window[-1]
        return_bps = (last - first) / first * BPS_PER_UNIT
        if abs(return_bps) < self._threshold_bps:
            return None
        strength = abs(return_bps) / self._threshold_bps
        confidence = min(1.0, round(float(strength) / 2, 4))
        # Start the next window from this price, so one trend is not signalled on every tick.
        window.clear()
        window.append(last)
        return Momentum(
            asset=asset,
            direction="long" if return_bps > 0 else "short",
            confidence=confidence,
            return_bps=return_bps.quantize(Decimal("0.01")),
            price=last,
        )


class ScoutOptions(msgspec.Struct, frozen=True, kw_only=True):
    # Empty: every asset the oracles publish.
    assets: tuple[str, ...] = ()
    window_prices: int = 10
    threshold_bps: Decimal = Decimal(50)


class ScoutWorker:
    def __init__(self, options: ScoutOptions) -> None:
        self._options = options
        self._assets = frozenset(options.assets)
        self._detector = MomentumDetector(
            window_prices=options.window_prices, threshold_bps=options.threshold_bps
        )

    async def setup(self, ctx: WorkerContext) -> None:
        async def on_price(msg: Msg) -> None:
            update = ctx.decode(_price_decoder, msg)
            if update is None or msg.subject != subjects.price(update.asset):
                return
            if self._assets and update.asset not in self._assets:
                return
            momentum = self._detector.observe(update.asset, update.price)
            if momentum is not None:
                await self._emit(ctx, momentum)

        await ctx.subscribe(subjects.price("*"), on_price)

    async def _emit(self, ctx: WorkerContext, momentum: Momentum) -> None:
        signal = AgentSignal(
            confidence=momentum.confidence,
            direction=momentum.direction,
            metadata={
                "scanner": SCANNER,
                "return_bps": str(momentum.return_bps),
                "window_prices": self._options.window_prices,
                "price": str(momentum.price),
            },
            agent_id=ctx.agent_id,
            signal_type="opportunity",
            asset=momentum.asset,
            timestamp=rfc3339(ctx.now_ns()),
        )
        if await ctx.bus.publish_signal("opportunity", momentum.asset, signal):
            ctx.log.info(
                "signal_emitted",
                asset=momentum.asset,
                direction=momentum.direction,
                confidence=momentum.confidence,
                return_bps=str(momentum.return_bps),
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assets", default="", help="comma-separated assets (default: all)")
    parser.add_argument(
        "--window-prices",
        type=int,
        default=10,
        help="prices in the momentum window (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold-bps",
        default="50",
        help="return over the window that makes a signal, in bps (default: %(default)s)",
    )


def options_from_args(args: argparse.Namespace) -> ScoutOptions:
    """Raises ConfigError for bad options."""
    if not 2 <= args.window_prices <= limits.momentum_window_prices_max:
        raise ConfigError(
            f"window_prices must be 2..{limits.momentum_window_prices_max}, "
            f"got {args.window_prices}"
        )
    assets = parse_tokens(args.assets, "asset") if args.assets else ()
    return ScoutOptions(
        assets=tuple(parse_token(a, "asset") for a in assets),
        window_prices=args.window_prices,
        threshold_bps=parse_decimal(args.threshold_bps, "threshold_bps"),
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    del rng  # A scout's decisions depend only on prices.
    return BuiltRole(worker=ScoutWorker(options_from_args(args)))


ROLE: Final = RoleSpec(
    name="scout",
    summary="detect momentum on swarm.price.* and emit opportunity signals",
    exchange_role="scout",
    add_arguments=add_arguments,
    build=build,
)
