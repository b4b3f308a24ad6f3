"""Lending (docs/economy.md, Lending): every rule of the page and its worked example."""

import json
from decimal import Decimal

from core_support import Harness
from core_support import restored as restore

from protocols import commands as c
from protocols import credit as cr
from protocols import queries as q
from protocols.ids import ADMIN

D = Decimal
DAY = 86_400


def balance(h: Harness, account: str) -> Decimal:
    return D(h.ex.ledger.book.balance(account)) / 1_000_000


def offer(h: Harness, lender: str = "claude", borrower: str = "zero", **terms: object) -> str:
    fields: dict[str, object] = {
        "principal": D(1000),
        "rate_per_day": D("0.01"),
        "term_s": 2 * DAY,
    }
    fields.update(terms)
    view = h.ok(lender, cr.OfferLoan, borrower=borrower, **fields)
    assert view["state"] == "offered"
    loan_id: str = view["loan_id"]
    return loan_id


def loan(h: Harness, loan_id: str) -> dict[str, object]:
    reply = json.loads(h.ex.query(cr.LoanQuery(loan_id=loan_id)))
    result: dict[str, object] = reply["result"]
    return result


def test_the_worked_example() -> None:
    h = Harness()
    loan_id = offer(h, collateral=D(200))
    assert balance(h, "claude") == 9000  # the principal is held at the offer
    view = h.ok("zero", cr.AcceptLoan, loan_id=loan_id)
    assert (view["state"], view["interest"], view["owed"]) == ("active", "20", "1020")
    assert balance(h, "zero") == 10_000 + 1000 - 200
    shown = json.loads(h.ex.query(q.BalanceQuery(agent="zero")))["result"]
    assert (shown["owed"], shown["held"]) == ("1020", "200")
    assert json.loads(h.ex.query(q.BalanceQuery(agent="claude")))["result"]["lent"] == "1020"
    # zero spends down to 700 before the due time.
    h.ok("zero", c.Transfer, to="spark", amount=D(10_100))
    assert balance(h, "zero") == 700
    claude = balance(h, "claude")
    h.advance(2 * DAY)
    h.tick()
    view = loan(h, loan_id)
    assert (view["state"], view["paid"], view["collateral_taken"], view["owed"]) == (
        "defaulted",
        "200",
        "200",
        "620",
    )
    assert balance(h, "claude") - claude == 400
    assert balance(h, "zero") == 500  # the reserve
    assert h.ex.ledger.agents["zero"].performance == D("0.9")
    assert json.loads(h.ex.query(q.BalanceQuery(agent="zero")))["result"]["defaults"] == 1
    # A commit of 450 to zero: half of it to claude.
    h.ok(
        ADMIN,
        c.Commit,
        author="zero@x.y",
        project="nexushive-setup",
        message="fix: a bug",
        sha="c0ffee",
    )  # 90 × 2.0 × 1.5 = 270
    assert loan(h, loan_id)["owed"] == "485"  # 620 − 135
    h.ok(ADMIN, c.Award, agent="zero", amount=D(1000), source="t")  # 500 of it recovers 485
    assert loan(h, loan_id)["owed"] == "0"
    assert balance(h, "claude") - claude == 400 + 135 + 485
    h.ok(ADMIN, c.Award, agent="zero", amount=D(10), source="t")  # nothing owed: all kept
    assert balance(h, "zero") == 500 + 135 + 515 + 10
    h.ex.check_invariants()


def test_repaid_in_full_at_the_due_time_returns_the_collateral() -> None:
    h = Harness()
    loan_id = offer(h, collateral=D(300))
    h.ok("zero", cr.AcceptLoan, loan_id=loan_id)
    h.advance(2 * DAY)
    h.tick()
    assert loan(h, loan_id)["state"] == "repaid"
    assert balance(h, "zero") == 10_000 - 20
    assert balance(h, "claude") == 10_020
    h.ex.check_invariants()


def test_early_repayment_in_parts_owes_the_whole_interest_and_a_loan_is_repaid_once() -> None:
    h = Harness()
    loan_id = offer(h, rate_per_day=D("0.05"), term_s=DAY)
    h.ok("zero", cr.AcceptLoan, loan_id=loan_id)
    assert h.ok("zero", cr.RepayLoan, loan_id=loan_id, amount=D(50))["owed"] == "1000"
    assert h.ok("zero", cr.RepayLoan, loan_id=loan_id)["state"] == "repaid"
    h.refused("zero", cr.RepayLoan, "loan_closed", loan_id=loan_id)
    assert balance(h, "claude") == 10_050
    h.advance(DAY)
    h.tick()  # the due timer finds it repaid
    assert balance(h, "claude") == 10_050


def test_an_offer_is_withdrawn_or_lapses_and_only_the_borrower_accepts() -> None:
    h = Harness()
    first = offer(h)
    h.refused("lambda", cr.AcceptLoan, "not_authorized", loan_id=first)
    h.refused("lambda", cr.CancelLoan, "not_authorized", loan_id=first)
    h.ok("zero", cr.CancelLoan, loan_id=first)
    h.refused("zero", cr.AcceptLoan, "loan_closed", loan_id=first)
    second = offer(h)
    h.advance(3600)
    h.tick()
    assert loan(h, second)["state"] == "expired"
    assert balance(h, "claude") == 10_000
    h.refused("zero", cr.AcceptLoan, "loan_closed", loan_id=second)


def test_bad_loans_are_refused_with_their_codes() -> None:
    h = Harness()
    terms = {"principal": D(100), "rate_per_day": D("0.01"), "term_s": DAY}
    h.refused("zero", cr.OfferLoan, "self_dealing", borrower="zero", **terms)
    h.refused("zero", cr.OfferLoan, "unknown_agent", **(terms | {"borrower": "nobody"}))
    bad: list[tuple[str, dict[str, object]]] = [
        ("parameter_out_of_bounds", {"term_s": 0}),
        ("parameter_out_of_bounds", {"term_s": 3599}),
        ("parameter_out_of_bounds", {"term_s": 30 * DAY + 1}),
        ("parameter_out_of_bounds", {"rate_per_day": D("0.051")}),
        ("parameter_out_of_bounds", {"rate_per_day": D("-0.01")}),
        ("amount_must_be_positive", {"principal": D(0)}),
        ("reserve_would_be_breached", {"principal": D(9600)}),
        ("amount_must_be_positive", {"collateral": D(-1)}),
    ]
    for code, change in bad:
        h.refused("claude", cr.OfferLoan, code, borrower="zero", **(terms | change))
    # Collateral the borrower does not have is refused when it accepts.
    loan_id = offer(h, collateral=D(9600))
    h.refused("zero", cr.AcceptLoan, "reserve_would_be_breached", loan_id=loan_id)
    h.refused("zero", cr.AcceptLoan, "unknown_loan", loan_id="loan-99")
    h.refused("zero", cr.RepayLoan, "loan_closed", loan_id=loan_id)
    h.refused(ADMIN, cr.OfferLoan, "not_authorized", borrower="zero", **terms)


def test_loans_survive_a_restore() -> None:
    h = Harness()
    loan_id = offer(h, collateral=D(100))
    h.ok("zero", cr.AcceptLoan, loan_id=loan_id)
    h.ok("zero", c.Transfer, to="spark", amount=D(10_000))
    h.advance(2 * DAY)
    h.tick()
    assert loan(h, loan_id)["state"] == "defaulted"
    again = restore(h.ex)
    assert again.snapshot() == h.ex.snapshot()
    assert again.lending._recovering == h.ex.lending._recovering == {"zero": [loan_id]}
    assert again.digest() == h.ex.digest()
