"""Every query's result has a published schema: ask a busy exchange every query, decode each
answer as the type protocols.registry.QUERY_RESULTS names and validate it against its JSON Schema
in schema/results/; and the state names protocols publishes equal the core's state machines."""

import json
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

import jsonschema
import msgspec
import pytest
from core_support import Harness

from exchange.core import states
from protocols import commands as c
from protocols import cooperation as coop
from protocols import credit as cr
from protocols import futures as fu
from protocols import queries as q
from protocols import state_names
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.registry import QUERIES, QUERY_RESULTS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"


def _busy() -> tuple[Harness, dict[str, q.Query]]:
    """An exchange with a task, an escrow, a proposal and a pool, and one query of each verb."""
    h = Harness()
    task_id = h.ok(
        "claude", s.AnnounceTask, task_type="analyze", asset="btc", deadline_ms=1000,
        max_cost=Decimal(100), bid_window_ms=10_000,
    )["task_id"]  # fmt: skip
    escrow_id = h.ok("claude", s.LockEscrow, payee="zero", amount=Decimal(5))["escrow_id"]
    proposal = h.apply(ADMIN, h.make(s.ProposeVote, title="motion", eligible=["claude", "zero"]))
    proposal_id = json.loads(proposal.reply)["result"]["proposal_id"]
    pool_id = h.ok("claude", c.PoolCreate, name="team", min_contribution=Decimal(1))["pool_id"]
    h.ok("zero", cr.Stake, amount=Decimal(100), lock_s=86_400)
    loan_id = h.ok(
        "claude", cr.OfferLoan, borrower="zero", principal=Decimal(10), rate_per_day=Decimal(0),
        term_s=3600,
    )["loan_id"]  # fmt: skip
    future_id = h.ok(
        "claude", fu.WriteFuture, model="llama3.2", tokens=1000, price=Decimal(1), expires_in_s=60
    )["future_id"]
    game = coop.Game(
        players=["a", "b"], coalitions=[coop.Worth(members=["a", "b"], value=1)], default_value=0
    )
    asked: dict[str, q.Query] = {
        "balance": q.BalanceQuery(agent="zero"),
        "history": q.HistoryQuery(agent="claude"),
        "limits": q.LimitsQuery(agent="zero"),
        "agents": q.AgentsQuery(),
        "pool": q.PoolQuery(pool_id=pool_id),
        "pools": q.PoolsQuery(),
        "status": q.StatusQuery(),
        "signals": q.SignalsQuery(),
        "pheromones": q.PheromonesQuery(),
        "task": q.TaskQuery(task_id=task_id),
        "tasks": q.TasksQuery(),
        "escrow": q.EscrowQuery(escrow_id=escrow_id),
        "proposal": q.ProposalQuery(proposal_id=proposal_id),
        "metrics": q.MetricsQuery(),
        "shapley": coop.ShapleyQuery(game=game, seed=1),
        "stakes": cr.StakesQuery(agent="zero"),
        "loan": cr.LoanQuery(loan_id=loan_id),
        "loans": cr.LoansQuery(),
        "future": fu.FutureQuery(future_id=future_id),
        "futures": fu.FuturesQuery(agent="claude"),
    }
    return h, asked


def test_every_query_has_a_result_type() -> None:
    assert sorted(QUERY_RESULTS) == sorted(QUERIES)
    _, asked = _busy()
    assert {verb: type(query) for verb, query in asked.items()} == QUERIES


@pytest.mark.parametrize("verb", sorted(QUERIES))
def test_each_answer_decodes_as_its_type_and_fits_its_schema(verb: str) -> None:
    h, asked = _busy()
    envelope = json.loads(h.ex.query(asked[verb]))
    assert envelope["ok"] is True, envelope
    result_type = QUERY_RESULTS[verb]
    msgspec.convert(envelope["result"], result_type)
    query_schema = json.loads((SCHEMA_DIR / "queries" / f"{verb}.json").read_text())
    result_schema = json.loads((SCHEMA_DIR / query_schema["x-result"]).read_text())
    assert result_schema["title"] == result_type.__name__
    jsonschema.Draft202012Validator(result_schema).validate(envelope["result"])


@pytest.mark.parametrize(
    ("published", "machine"),
    [
        (state_names.TASK_STATES, states.TaskState),
        (state_names.ESCROW_STATES, states.EscrowState),
        (state_names.PROPOSAL_STATES, states.ProposalState),
        (state_names.ACTION_STATES, states.ActionState),
        (state_names.COALITION_STATES, states.CoalitionState),
        (cr.STAKE_STATES, states.StakeState),
        (cr.LOAN_STATES, states.LoanState),
        (fu.FUTURE_STATES, states.FutureState),
    ],
)
def test_published_state_names_are_the_core_states(
    published: tuple[str, ...], machine: type[StrEnum]
) -> None:
    assert published == tuple(state.value for state in machine)


def test_result_schemas_enumerate_the_states() -> None:
    task = json.loads((SCHEMA_DIR / "results" / "TaskView.json").read_text())
    view = task["$defs"]["TaskView"]["properties"]
    assert view["state"]["enum"] == list(state_names.TASK_STATES)
    escrow_state = view["escrow_state"]["anyOf"][0]
    assert escrow_state["enum"] == list(state_names.ESCROW_STATES)
    proposal = json.loads((SCHEMA_DIR / "results" / "ProposalView.json").read_text())
    properties = proposal["$defs"]["ProposalView"]["properties"]
    assert properties["state"]["enum"] == list(state_names.PROPOSAL_STATES)
    assert properties["action_state"]["enum"] == list(state_names.ACTION_STATES)
