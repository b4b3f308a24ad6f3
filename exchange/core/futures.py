"""Compute futures (docs/economy.md, Compute futures): the right to ``tokens`` inference tokens of
``model`` at a fixed price per 1,000, settled in cash at expiry against the model's price then.

Every future is two system accounts, moved only by double-entry postings:
``@future.<id>`` holds the notional the buyer paid, ``@future.<id>.margin`` the writer's margin.
The writer is an agent (``future.write``) or the exchange's ``@llm.<model>`` (``future.buy``).
At settlement the holder receives the spot value min(S, F + margin) and the writer the rest, so
both accounts end at 0 and nothing is created or lost. Every future ends by the exchange clock:
an untaken offer lapses at expiry, a taken one settles at expiry or is liquidated earlier by a
margin check the writer cannot meet.

The command API (what the simulation and agents send; protocols/futures.py):

- ``WriteFuture(model, tokens, price, expires_in_s, buyer=None)`` by the writer;
- ``BuyFuture(model, tokens, expires_in_s)`` by the buyer, from the exchange at today's price;
- ``TakeFuture(future_id, price)`` by the buyer of an offer or a listing (``price`` exact);
- ``ListFuture(future_id, price, to=None)`` by the holder, to resell.

Timers: ``future_expiry`` (settle or lapse) and ``future_margin`` (every ``margin_check_s``).
Ended futures are kept up to ``futures.ended_futures_kept``; a forgotten one's timers find
nothing and do nothing.
"""

from collections import deque
from decimal import Decimal

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Ledger
from exchange.core.money import round_half_even, scale
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.states import ENDED_FUTURE_STATES, FUTURE, FutureEvent, FutureState
from protocols import futures as fu
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.units import NS_PER_S


def future_account(future_id: str) -> str:
    """Holds the notional the buyer paid."""
    return f"@future.{future_id}"


def margin_account(future_id: str) -> str:
    """Holds the writer's margin."""
    return f"@future.{future_id}.margin"


# A mutable Struct, like an escrow: a snapshot encodes it directly.
class Future(msgspec.Struct):
    id: str
    model: str
    tokens: int
    price_micro: int  # per 1,000 inference tokens
    notional_micro: int
    writer: str  # an agent id or @llm.<model>
    state: FutureState
    expires_at_ns: int
    margin_micro: int
    initial_margin_micro: int
    holder: str | None = None
    buyer: str | None = None  # the one agent that may take the offer, if named
    listing_price_micro: int | None = None
    listing_to: str | None = None
    spot_micro: int | None = None
    to_holder_micro: int | None = None
    to_writer_micro: int | None = None


class FuturesState(msgspec.Struct, frozen=True, kw_only=True):
    """The futures kept, by id in creation order, the ended ones' ids, oldest first, and what
    futures have moved into the ``@llm.<model>`` accounts in all (negative: out of them)."""

    futures: list[Future]
    ended: list[str]
    llm_net: int = 0


class Futures:
    """The futures rules, installed into a ``Ledger``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.config = ledger.config.futures
        self.by_id: dict[str, Future] = {}
        self.ended: deque[str] = deque()
        # What futures moved into the @llm.<model> accounts (margins out, settlements in): the
        # swarm metrics count those accounts as inference paid, and take this out of them.
        self.llm_net_micro = 0

    # ----------------------------------------------------------------------------- snapshot

    def snapshot(self) -> FuturesState:
        return FuturesState(
            futures=list(self.by_id.values()), ended=list(self.ended), llm_net=self.llm_net_micro
        )

    def restore(self, state: FuturesState) -> None:
        assert not self.by_id, "restore into an exchange with no futures"
        self.by_id.update((f.id, f) for f in state.futures)
        self.ended.extend(state.ended)
        self.llm_net_micro = state.llm_net

    def used(self) -> bool:
        """Whether this exchange has any future (the digest hashes the part only then)."""
        return bool(self.by_id or self.ended)

    # ----------------------------------------------------------------------------- commands

    def write(self, sender: str, cmd: fu.WriteFuture) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        writer = ledger.acting_agent(sender)
        if isinstance(writer, Refusal):
            return writer
        model = ledger.known_model(cmd.model)
        if isinstance(model, Refusal):
            return model
        if cmd.buyer is not None:
            buyer = ledger.agent(cmd.buyer)
            if isinstance(buyer, Refusal):
                return buyer
            if buyer is writer:
                return refuse(ErrorCode.self_dealing, "an agent cannot write a future to itself")
        if (bad := self._expiry_refusal(cmd.expires_in_s)) is not None:
            return bad
        price = ledger.amount(cmd.price, "price")
        if isinstance(price, Refusal):
            return price
        notional = round_half_even(Decimal(price) * cmd.tokens / 1000)
        if (bad := self._notional_refusal(notional)) is not None:
            return bad
        margin = scale(notional, self.config.margin_rate)
        if margin and (denied := ledger.check_debit(writer, margin)) is not None:
            return denied
        future = self._new(model, cmd.tokens, price, notional, writer.id, margin, cmd.expires_in_s)
        future.buyer = cmd.buyer
        return self.view(future)

    def buy(self, sender: str, cmd: fu.BuyFuture) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        buyer = ledger.acting_agent(sender)
        if isinstance(buyer, Refusal):
            return buyer
        model = ledger.known_model(cmd.model)
        if isinstance(model, Refusal):
            return model
        if (bad := self._expiry_refusal(cmd.expires_in_s)) is not None:
            return bad
        price = round_half_even(ledger.prices_micro[model])
        notional = ledger.cost_micro(model, cmd.tokens)
        if (bad := self._notional_refusal(notional)) is not None:
            return bad
        margin = scale(notional, self.config.margin_rate)
        writer = acc.llm_account(model)
        can_cover = ledger.book.balance(writer)
        if can_cover < margin:
            return refuse(
                ErrorCode.insufficient_funds,
                f"the exchange writes futures on {model} from what {writer} has been paid for "
                f"inference: it holds {format_micro(can_cover)}, the margin is "
                f"{format_micro(margin)}; buy fewer tokens, or take an agent's offer",
                available=format_micro(can_cover),
                requested=format_micro(margin),
            )
        if (denied := ledger.check_debit(buyer, notional)) is not None:
            return denied
        future = self._new(model, cmd.tokens, price, notional, writer, margin, cmd.expires_in_s)
        self._take_offer(future, buyer.id)
        return self.view(future)

    def take(self, sender: str, cmd: fu.TakeFuture) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        taker = ledger.acting_agent(sender)
        if isinstance(taker, Refusal):
            return taker
        future = self.find(cmd.future_id)
        if isinstance(future, Refusal):
            return future
        price = ledger.amount(cmd.price, "price")
        if isinstance(price, Refusal):
            return price
        if future.writer == taker.id or future.holder == taker.id:
            return refuse(
                ErrorCode.self_dealing,
                f"{taker.id} is already a party to {future.id}: a future needs two parties",
            )
        if future.state == FutureState.offered:
            named, asked = future.buyer, future.notional_micro
        elif future.state == FutureState.open and future.listing_price_micro is not None:
            named, asked = future.listing_to, future.listing_price_micro
        else:
            hint = "it is not listed for resale" if future.state == FutureState.open else ""
            refusal = FUTURE.refusal(future.state, FutureEvent.take, future.id, hint)
            return refusal or refuse(ErrorCode.future_not_open, f"{future.id} is open; {hint}")
        if named is not None and named != taker.id:
            return refuse(
                ErrorCode.not_authorized, f"{future.id} is offered to {named} only, not {taker.id}"
            )
        if price != asked:
            return refuse(
                ErrorCode.price_mismatch,
                f"{future.id} is offered at {format_micro(asked)} tokens, not "
                f"{format_micro(price)}; send the price asked (see `exchange future show`)",
                requested=format_micro(price),
                available=format_micro(asked),
            )
        if (denied := ledger.check_debit(taker, price)) is not None:
            return denied
        if future.state == FutureState.offered:
            self._take_offer(future, taker.id)
        else:
            assert future.holder is not None
            ledger.book.post(taker.id, future.holder, price, "future.sale", future.id)
            future.holder = taker.id
            future.listing_price_micro = future.listing_to = None
        return self.view(future)

    def list_for_sale(self, sender: str, cmd: fu.ListFuture) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        holder = ledger.acting_agent(sender)
        if isinstance(holder, Refusal):
            return holder
        future = self.find(cmd.future_id)
        if isinstance(future, Refusal):
            return future
        if future.state != FutureState.open:
            return refuse(
                ErrorCode.future_not_open,
                f"{future.id} is {future.state}; only an open future (taken, not ended) is resold",
            )
        if future.holder != holder.id:
            return refuse(
                ErrorCode.not_authorized,
                f"{future.id} is held by {future.holder}; only its holder may list it",
            )
        price = ledger.amount(cmd.price, "price")
        if isinstance(price, Refusal):
            return price
        if cmd.to is not None:
            to = ledger.agent(cmd.to)
            if isinstance(to, Refusal):
                return to
            if to is holder or to.id == future.writer:
                return refuse(
                    ErrorCode.self_dealing,
                    f"{to.id} is already a party to {future.id}: list it to another agent",
                )
        future.listing_price_micro, future.listing_to = price, cmd.to
        return self.view(future)

    # ----------------------------------------------------------------------------- timers

    def on_expiry(self, future_id: str) -> None:
        future = self.by_id.get(future_id)
        if future is None or future.state in ENDED_FUTURE_STATES:
            return
        if future.state == FutureState.offered:
            if future.margin_micro:
                self.ledger.book.post(
                    margin_account(future.id),
                    future.writer,
                    future.margin_micro,
                    "future.lapse",
                    future.id,
                )
                self._moved_llm(future.writer, future.margin_micro)
            future.margin_micro = 0
            future.state = FUTURE.next(future.state, FutureEvent.lapse)
            self._ended(future)
            return
        self._settle(future, FutureEvent.settle)

    def on_margin_check(self, future_id: str) -> None:
        future = self.by_id.get(future_id)
        if future is None or future.state in ENDED_FUTURE_STATES:
            return
        ledger = self.ledger
        if future.state == FutureState.open:
            spot = ledger.cost_micro(future.model, future.tokens)
            exposure = max(0, spot - future.notional_micro)
            call = exposure + future.initial_margin_micro - future.margin_micro
            # A margin topped up before may already cover more than the call would restore.
            if exposure > scale(future.margin_micro, self.config.maintenance_share) and call > 0:
                if not self._writer_can_pay(future.writer, call):
                    self._settle(future, FutureEvent.liquidate)
                    return
                ledger.book.post(
                    future.writer, margin_account(future.id), call, "future.margin", future.id
                )
                self._moved_llm(future.writer, -call)
                future.margin_micro += call
        self._next_check(future)

    # ----------------------------------------------------------------------------- queries

    def find(self, future_id: str) -> Future | Refusal:
        future = self.by_id.get(future_id)
        if future is not None:
            return future
        return refuse(
            ErrorCode.unknown_future,
            f"no future {future_id!r}; list them with `exchange futures` "
            + kept_note(self.config.ended_futures_kept, "ended futures"),
        )

    def view(self, future: Future) -> fu.FutureView:
        def tokens(micro: int | None) -> str | None:
            return None if micro is None else format_micro(micro)

        return fu.FutureView(
            future_id=future.id,
            model=future.model,
            tokens=future.tokens,
            price=format_micro(future.price_micro),
            notional=format_micro(future.notional_micro),
            writer=future.writer,
            holder=future.holder,
            buyer=future.buyer,
            state=future.state,
            expires_at_ns=future.expires_at_ns,
            margin=format_micro(future.margin_micro),
            listing_price=tokens(future.listing_price_micro),
            listing_to=future.listing_to,
            spot=tokens(future.spot_micro),
            to_holder=tokens(future.to_holder_micro),
            to_writer=tokens(future.to_writer_micro),
        )

    def query_one(self, query: fu.FutureQuery) -> msgspec.Struct | Refusal:
        future = self.find(query.future_id)
        return future if isinstance(future, Refusal) else self.view(future)

    def query_many(self, query: fu.FuturesQuery) -> msgspec.Struct:
        agent = query.agent
        chosen = [
            f
            for f in self.by_id.values()
            if agent is None or agent in (f.writer, f.holder, f.buyer, f.listing_to)
        ]
        return fu.FuturesResult(futures=[self.view(f) for f in chosen[-query.limit :]])

    def committed_micro(self, agent: str) -> int:
        """What ``agent`` has in futures: the margin it posted as a writer and the notional of
        the open futures it holds (the balance query's ``in_futures``). O(futures kept)."""
        total = 0
        for f in self.by_id.values():
            if f.writer == agent:
                total += f.margin_micro
            if f.holder == agent and f.state == FutureState.open:
                total += f.notional_micro
        return total

    # ----------------------------------------------------------------------------- invariants

    def check_accounts(self) -> None:
        """Every kept future's two accounts hold exactly what it says (0 once ended)."""
        book = self.ledger.book
        for f in self.by_id.values():
            paid = f.notional_micro if f.state == FutureState.open else 0
            assert book.balance(future_account(f.id)) == paid, f"{f.id} notional account"
            assert book.balance(margin_account(f.id)) == f.margin_micro, f"{f.id} margin account"
            if f.state in ENDED_FUTURE_STATES:
                assert f.margin_micro == 0, f"{f.id} ended with margin"

    # ----------------------------------------------------------------------------- inside

    def _expiry_refusal(self, expires_in_s: int) -> Refusal | None:
        low, high = self.config.min_expiry_s, self.config.max_expiry_s
        if low <= expires_in_s <= high:
            return None
        return refuse(
            ErrorCode.parameter_out_of_bounds,
            f"expires_in_s must be within [{low}, {high}] seconds, got {expires_in_s}",
            path="$.expires_in_s",
        )

    @staticmethod
    def _notional_refusal(notional: int) -> Refusal | None:
        if notional > 0:
            return None
        return refuse(
            ErrorCode.amount_must_be_positive,
            "the future's notional (price × tokens / 1000) rounds to 0 micro-tokens; "
            "buy more tokens or at a higher price",
        )

    def _new(
        self,
        model: str,
        tokens: int,
        price: int,
        notional: int,
        writer: str,
        margin: int,
        expires_in_s: int,
    ) -> Future:
        ledger = self.ledger
        future_id = ledger.new_id("future")
        expires_at_ns = ledger.book.now_ns + expires_in_s * NS_PER_S
        future = Future(
            id=future_id,
            model=model,
            tokens=tokens,
            price_micro=price,
            notional_micro=notional,
            writer=writer,
            state=FutureState.offered,
            expires_at_ns=expires_at_ns,
            margin_micro=margin,
            initial_margin_micro=margin,
        )
        if margin:
            ledger.book.post(writer, margin_account(future_id), margin, "future.margin", future_id)
            self._moved_llm(writer, -margin)
        self.by_id[future_id] = future
        ledger.add_timer(expires_at_ns, "future_expiry", future_id)
        self._next_check(future)
        return future

    def _take_offer(self, future: Future, buyer: str) -> None:
        self.ledger.book.post(
            buyer, future_account(future.id), future.notional_micro, "future.buy", future.id
        )
        future.holder = buyer
        future.state = FUTURE.next(future.state, FutureEvent.take)

    def _next_check(self, future: Future) -> None:
        at_ns = self.ledger.book.now_ns + self.config.margin_check_s * NS_PER_S
        if at_ns < future.expires_at_ns:
            self.ledger.add_timer(at_ns, "future_margin", future.id)

    def _writer_can_pay(self, writer: str, amount: int) -> bool:
        agent = self.ledger.agents.get(writer)
        if agent is None:  # the exchange's @llm.<model>
            return self.ledger.book.balance(writer) >= amount
        return self.ledger.check_debit(agent, amount) is None

    def _settle(self, future: Future, event: FutureEvent) -> None:
        """Pays the holder the spot value (at most both accounts), the writer the rest."""
        book = self.ledger.book
        holder = future.holder
        assert holder is not None
        spot = self.ledger.cost_micro(future.model, future.tokens)
        notional, margin = future.notional_micro, future.margin_micro
        to_holder = min(spot, notional + margin)
        from_notional = min(notional, to_holder)
        payments = (
            (future_account(future.id), holder, from_notional),
            (future_account(future.id), future.writer, notional - from_notional),
            (margin_account(future.id), holder, to_holder - from_notional),
            (margin_account(future.id), future.writer, margin - (to_holder - from_notional)),
        )
        for debit, credit, amount in payments:
            if amount:
                book.post(debit, credit, amount, f"future.{event}", future.id)
        future.spot_micro, future.to_holder_micro = spot, to_holder
        future.to_writer_micro = notional + margin - to_holder
        self._moved_llm(future.writer, future.to_writer_micro)
        future.margin_micro = 0
        future.listing_price_micro = future.listing_to = None
        future.state = FUTURE.next(future.state, event)
        self._ended(future)

    def _moved_llm(self, writer: str, amount_micro: int) -> None:
        if writer not in self.ledger.agents:  # the exchange's @llm.<model>
            self.llm_net_micro += amount_micro

    def _ended(self, future: Future) -> None:
        keep_newest(self.ended, future.id, self.config.ended_futures_kept, self._forget)

    def _forget(self, future_id: str) -> None:
        self.by_id.pop(future_id, None)


__all__ = ["Future", "Futures", "FuturesState", "future_account", "margin_account"]
