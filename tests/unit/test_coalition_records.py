"""Coalitions as ledger records (coalition.form / coalition.end): formation by the greedy rule,
the Shapley split, the stability count, and only the configured number of ended ones kept."""

import json

from core_support import Harness
from core_support import restored as restore

from exchange.core.config import EconomyConfig
from protocols import cooperation as coop
from protocols.ids import ADMIN

# Claude and builder are worth 10 each and 30 together; lambda adds nothing.
GAME = coop.Game(
    values={"claude": 10.0, "builder": 10.0, "lambda": 0.0},
    synergies=[coop.Synergy(members=["claude", "builder"], bonus=10.0)],
)


def form(h: Harness) -> dict[str, object]:
    return h.ok("claude", coop.FormCoalition, candidates=["claude", "builder", "lambda"], game=GAME)


def test_formation_splits_by_shapley_and_ending_counts_for_stability() -> None:
    h = Harness()
    formed = form(h)
    assert formed["members"] == ["claude", "builder"] or formed["members"] == ["builder", "claude"]
    assert formed["shares"] == {"claude": 15.0, "builder": 15.0} and formed["in_core"] is True
    assert h.ex.metric_inputs().coalitions_formed == 0  # counted when it ends
    h.refused(
        "builder",
        coop.EndCoalition,
        "not_authorized",
        coalition_id=formed["coalition_id"],
        intact=True,
    )
    assert (
        h.ok(ADMIN, coop.EndCoalition, coalition_id=formed["coalition_id"], intact=True)["state"]
        == "intact"
    )
    inputs = h.ex.metric_inputs()
    assert (inputs.coalitions_formed, inputs.coalitions_intact) == (1, 1)


def test_only_the_configured_number_of_ended_coalitions_is_kept() -> None:
    h = Harness(EconomyConfig(ended_coalitions_kept=1))
    ids = [str(form(h)["coalition_id"]) for _ in range(3)]
    for coalition_id, intact in zip(ids, (True, False, True), strict=True):
        h.ok("claude", coop.EndCoalition, coalition_id=coalition_id, intact=intact)
    assert list(h.ex.coalitions.coalitions) == ids[2:] and list(h.ex.coalitions.ended) == ids[2:]
    inputs = h.ex.metric_inputs()
    assert (inputs.coalitions_formed, inputs.coalitions_intact) == (3, 2)
    outcome = h.send("claude", coop.EndCoalition, coalition_id=ids[0], intact=True)
    assert not outcome.ok and "the last 1 ended" in json.loads(outcome.reply)["error"]["message"]
    again = restore(h.ex)
    assert again.digest() == h.ex.digest() and again.metric_inputs() == inputs
