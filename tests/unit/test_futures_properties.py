"""Properties of compute futures over random command sequences (a Hypothesis state machine):
agents write, buy, take, list and resell futures while prices move by vote, inference pays the
model accounts and time passes by random steps. After every step: the sum of all balances is 0,
no agent or future account is negative, every kept future's accounts hold exactly what it says,
and a refusal changed nothing. At the end, past the longest expiry, every future has ended
(settled, liquidated or lapsed) with both its accounts at 0, and folding the log into a fresh
exchange and restoring a snapshot both give the same digest."""

import json
from decimal import Decimal
from typing import Final

from core_support import ROSTER, ReplayedMachine
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from exchange.core.config import EconomyConfig
from exchange.core.futures import future_account, margin_account
from exchange.core.ledger import Outcome
from exchange.core.states import ENDED_FUTURE_STATES
from protocols import commands as c
from protocols import futures as fu
from protocols import swarm as s
from protocols.ids import ADMIN, EXCHANGE
from protocols.units import NS_PER_S

MODELS: Final = ("claude-opus", "claude-sonnet", "llama3.2")
MAX_EXPIRY_S: Final = 6 * 3600

agents = st.sampled_from(ROSTER)
models = st.sampled_from(MODELS)
inference = st.sampled_from([1, 500, 5000, 20_000, 33_333])
expiries = st.sampled_from([5, 60, 600, 3600, 3601, MAX_EXPIRY_S])
prices = st.sampled_from(
    [Decimal(0), Decimal("0.000001"), Decimal("0.1"), Decimal(3), Decimal(15), Decimal(40)]
)
amounts = st.sampled_from([Decimal(0), Decimal(1), Decimal(50), Decimal(150), Decimal(9000)])
new_prices = st.sampled_from([Decimal("0.1"), Decimal(2), Decimal(15), Decimal(30), Decimal(90)])
picks = st.integers(min_value=0, max_value=1000)


class FuturesMachine(ReplayedMachine):
    def __init__(self) -> None:
        # Set before the genesis commands, which ``apply`` below sees.
        self.ended_checked = False
        self.llm_net = 0
        super().__init__(EconomyConfig())

    def apply(self, sender: str, command: c.Command) -> Outcome:
        outcome = super().apply(sender, command)
        for p in outcome.postings:  # what futures moved in and out of the model accounts
            if p.kind.startswith("future."):
                self.llm_net += p.amount_micro * (
                    p.credit.startswith("@llm.") - p.debit.startswith("@llm.")
                )
        return outcome

    def future_ids(self) -> list[str]:
        return list(self.ex.futures.by_id)

    def pick(self, index: int) -> str:
        ids = self.future_ids()
        return ids[index % len(ids)] if ids else "future-0"

    # ----------------------------------------------------------------------- rules

    @rule(step_s=st.sampled_from([1, 59, 600, 3599, 3600, 7200]))
    def advance(self, step_s: int) -> None:
        self.now_ns += step_s * NS_PER_S
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))

    @rule(who=agents, model=models, tokens=inference)
    def spend(self, who: str, model: str, tokens: int) -> None:
        self.apply(
            who, c.LlmRequest(request_id=self.rid(), task_type="t", tokens=tokens, model=model)
        )

    @rule(who=agents, to=agents)
    def drain(self, who: str, to: str) -> None:
        """Leaves ``who`` just above its reserve, so that a margin call can fail."""
        excess = self.ex.ledger.book.balance(who) - 501 * 1_000_000
        if excess > 0 and who != to:
            amount = Decimal(excess).scaleb(-6)
            self.apply(who, c.Transfer(request_id=self.rid(), to=to, amount=amount))

    @precondition(lambda self: any(f.state == "open" for f in self.ex.futures.by_id.values()))
    @rule(pick=picks, to=agents)
    def squeeze(self, pick: int, to: str) -> None:
        """An open future's writer is left poor, its model's price jumps, an hour passes: the
        margin check must call for margin, and liquidate a writer that cannot pay."""
        future = [f for f in self.ex.futures.by_id.values() if f.state == "open"][
            pick % 1000 // 1000
        ]
        if future.writer in ROSTER:
            self.drain(future.writer, to)
        self.reprice(future.model, Decimal(90))
        self.advance(3600)
        event(f"squeezed, {future.state}")

    @rule(model=models, price=new_prices)
    def reprice(self, model: str, price: Decimal) -> None:
        action = s.ModelPriceAction(model=model, price=price)
        outcome = self.apply(
            ADMIN,
            s.ProposeVote(request_id=self.rid(), title="p", kind="supermajority", action=action),
        )
        assert outcome.ok, outcome.reply
        proposal_id = json.loads(outcome.reply)["result"]["proposal_id"]
        for voter in ROSTER:
            ballot = s.Ballot(choice="yes")
            self.apply(
                voter, s.CastVote(request_id=self.rid(), proposal_id=proposal_id, ballot=ballot)
            )

    @rule(
        who=agents,
        model=models,
        tokens=inference,
        price=prices,
        expires=expiries,
        buyer=st.one_of(st.none(), agents),
    )
    def write(
        self, who: str, model: str, tokens: int, price: Decimal, expires: int, buyer: str | None
    ) -> None:
        command = fu.WriteFuture(
            request_id=self.rid(),
            model=model,
            tokens=tokens,
            price=price,
            expires_in_s=expires,
            buyer=buyer,
        )
        self.apply(who, command)

    @rule(who=agents, model=models, tokens=inference, expires=expiries)
    def buy(self, who: str, model: str, tokens: int, expires: int) -> None:
        command = fu.BuyFuture(
            request_id=self.rid(), model=model, tokens=tokens, expires_in_s=expires
        )
        self.apply(who, command)

    @rule(who=agents, pick=picks, exact=st.booleans(), other=amounts)
    def take(self, who: str, pick: int, exact: bool, other: Decimal) -> None:
        future_id = self.pick(pick)
        future = self.ex.futures.by_id.get(future_id)
        price = other
        if exact and future is not None:
            asked = (
                future.notional_micro
                if future.listing_price_micro is None
                else future.listing_price_micro
            )
            price = Decimal(asked).scaleb(-6)
        self.apply(who, fu.TakeFuture(request_id=self.rid(), future_id=future_id, price=price))

    @rule(
        pick=picks,
        by_holder=st.booleans(),
        who=agents,
        price=amounts,
        to=st.one_of(st.none(), agents),
    )
    def list_it(self, pick: int, by_holder: bool, who: str, price: Decimal, to: str | None) -> None:
        future_id = self.pick(pick)
        future = self.ex.futures.by_id.get(future_id)
        sender = future.holder if by_holder and future and future.holder else who
        command = fu.ListFuture(request_id=self.rid(), future_id=future_id, price=price, to=to)
        self.apply(sender, command)

    # ----------------------------------------------------------------------- invariants

    @invariant()
    def conserved_and_collateralised(self) -> None:
        self.ex.check_invariants()  # conservation, no negative balance, every future's accounts
        assert self.ex.futures.llm_net_micro == self.llm_net

    @precondition(lambda self: self.future_ids() and not self.ended_checked)
    @rule()
    def every_future_ends(self) -> None:
        """Past the longest expiry every future has ended and its accounts are empty; the log
        folds into the same state, and so does a snapshot."""
        self.ended_checked = True
        self.now_ns += (MAX_EXPIRY_S + 1) * NS_PER_S
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))
        book = self.ex.ledger.book
        for future in self.ex.futures.by_id.values():
            assert future.state in ENDED_FUTURE_STATES, (future.id, future.state)
            event(f"a future ended {future.state}")
            assert book.balance(future_account(future.id)) == 0
            assert book.balance(margin_account(future.id)) == 0
        self.check_replay()


TestFutures = FuturesMachine.TestCase
TestFutures.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
