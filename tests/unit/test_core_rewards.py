"""Earning rules of seed 1 (commits, closed issues, direct awards), checked against the worked
numbers of docs/economy.md, with one example for every refusal these commands can produce."""

from decimal import Decimal
from typing import Any

import pytest
from core_support import D, Harness

from exchange.core.config import Contract, EconomyConfig
from protocols import commands as c
from protocols import queries as q
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, EXCHANGE


def commit(h: Harness, author: str, project: str, message: str, **fields: object) -> dict[str, Any]:
    return h.ok(ADMIN, c.Commit, author=author, project=project, message=message, **fields)


# ---------------------------------------------------------------------------------- commits


def test_commit_worked_examples() -> None:
    h = Harness()
    first = commit(h, "claude@aygp-dr.ai", "nexushive-setup", "fix: bug")
    assert first == {
        "agent": "claude",
        "reward": "450",
        "contract": "nexushive-setup",
        "project_multiplier": "2.0",
        "commit_bonus": "1.5",
        "budget_exhausted": False,
        "budget_remaining": "49550",
        "balance": "10450",
    }
    second = commit(h, "builder@aygp-dr.ai", "scheme-parser", "docs: readme")
    assert (second["reward"], second["contract"]) == ("237.6", "scheme-*")
    assert (second["project_multiplier"], second["commit_bonus"]) == ("1.8", "1.1")
    assert second["budget_remaining"] == "39762.4"
    third = commit(h, "zero@aygp-dr.ai", "other", "fix critical bug")
    assert (third["reward"], third["contract"], third["commit_bonus"]) == ("180", "default", "2.0")
    assert h.balance("claude") == 10_450
    assert h.balance("builder") == D("10237.6")
    assert h.balance("zero") == 10_180
    # Minted from @mint: the supply grew by exactly the three rewards.
    assert h.account("@mint") == -(6 * 10_000 + D("867.6"))


def test_a_commit_mints_earnings_visible_in_the_balance_query() -> None:
    h = Harness()
    commit(h, "claude@aygp-dr.ai", "nexushive-setup", "fix: bug")
    balance = h.query(q.BalanceQuery(agent="claude"))
    assert balance == {
        "agent": "claude",
        "balance": "10450",
        "earned": "450",
        "spent": "0",
        "held": "0",
    }


@pytest.mark.parametrize(
    ("message", "bonus"),
    [
        ("fix: the parser", "1.5"),
        ("FIX the parser", "1.5"),
        ("(fix) the parser", "1.5"),
        ("prefix the parser", "1.0"),
        ("fixes the parser", "1.0"),
        ("suffix", "1.0"),
        ("bugfix", "1.0"),
        ("hotfix: prod", "2.0"),
        ("security: bump", "2.0"),
        ("add test coverage", "1.3"),
        ("testing things", "1.0"),
        ("refactor cleanup", "1.2"),
        ("update README", "1.1"),
        ("documentation", "1.1"),
        ("plain change", "1.0"),
        ("", "1.0"),
    ],
)
def test_commit_bonus_keywords_match_whole_words_case_insensitively(
    message: str, bonus: str
) -> None:
    h = Harness()
    result = commit(h, "zero", "other", message)
    assert Decimal(result["commit_bonus"]) == Decimal(bonus)
    assert Decimal(result["reward"]) == 90 * Decimal(bonus)


@pytest.mark.parametrize(
    ("message", "bonus"),
    [
        ("docs: fix typo", "1.5"),
        ("test: fix critical bug", "2.0"),
        ("cleanup and docs", "1.2"),
        ("readme, tests, spec, patch and urgent", "2.0"),
    ],
)
def test_the_highest_tier_wins_and_tiers_do_not_multiply(message: str, bonus: str) -> None:
    h = Harness()
    result = commit(h, "zero", "other", message)
    assert result["commit_bonus"] == bonus
    assert Decimal(result["reward"]) == 90 * Decimal(bonus)


@pytest.mark.parametrize(
    ("project", "contract", "multiplier"),
    [
        ("nexushive-setup", "nexushive-setup", "2.0"),
        ("claude-monitor", "claude-monitor", "1.5"),
        ("scheme-parser", "scheme-*", "1.8"),
        ("scheme-", "scheme-*", "1.8"),
        # A full match, not a search: these fall through to the default contract.
        ("nexushive-setup-2", "default", "1.0"),
        ("my-nexushive-setup", "default", "1.0"),
        ("xscheme-parser", "default", "1.0"),
        ("claude-monitor ", "default", "1.0"),
        ("anything", "default", "1.0"),
    ],
)
def test_contracts_need_a_full_match(project: str, contract: str, multiplier: str) -> None:
    h = Harness()
    result = commit(h, "lambda", project, "plain")
    assert (result["contract"], result["project_multiplier"]) == (contract, multiplier)
    assert Decimal(result["reward"]) == 110 * Decimal(multiplier)


def test_contracts_are_tried_in_order() -> None:
    # Both patterns match "scheme-x"; the first in the list wins, whichever is more specific.
    config = EconomyConfig(
        contracts=[
            Contract(name="wide", pattern="scheme-.*", multiplier=D(3), budget=D(1000)),
            Contract(name="narrow", pattern="scheme-x", multiplier=D(5), budget=D(1000)),
            Contract(name="default", pattern=".*", multiplier=D(1), budget=D(1000)),
        ]
    )
    h = Harness(config)
    assert commit(h, "zero", "scheme-x", "plain")["contract"] == "wide"


def test_contract_budget_pays_what_remains_then_refuses() -> None:
    config = EconomyConfig(
        contracts=[Contract(name="small", pattern=".*", multiplier=D(1), budget=D(200))]
    )
    h = Harness(config)
    first = commit(h, "claude", "p", "plain")
    assert (first["reward"], first["budget_exhausted"], first["budget_remaining"]) == (
        "150",
        False,
        "50",
    )
    second = commit(h, "claude", "p", "fix: more")
    # 225 asked, 50 left: pays the 50 and says so.
    assert (second["reward"], second["budget_exhausted"], second["budget_remaining"]) == (
        "50",
        True,
        "0",
    )
    assert h.balance("claude") == 10_200
    error = h.refused(ADMIN, c.Commit, ErrorCode.contract_budget_exhausted, **_plain("claude"))
    assert "200" in error["message"]
    assert h.balance("claude") == 10_200


def test_a_reward_that_exactly_fills_the_budget_is_not_exhausted_yet() -> None:
    config = EconomyConfig(
        contracts=[Contract(name="exact", pattern=".*", multiplier=D(1), budget=D(300))]
    )
    h = Harness(config)
    assert commit(h, "claude", "p", "plain")["budget_exhausted"] is False
    last = commit(h, "claude", "p", "plain")
    assert (last["reward"], last["budget_exhausted"], last["budget_remaining"]) == (
        "150",
        False,
        "0",
    )
    h.refused(ADMIN, c.Commit, ErrorCode.contract_budget_exhausted, **_plain("claude"))


def test_budgets_are_kept_per_contract() -> None:
    config = EconomyConfig(
        contracts=[
            Contract(name="a", pattern="a", multiplier=D(1), budget=D(150)),
            Contract(name="b", pattern=".*", multiplier=D(1), budget=D(1000)),
        ]
    )
    h = Harness(config)
    commit(h, "claude", "a", "plain")
    h.refused(ADMIN, c.Commit, ErrorCode.contract_budget_exhausted, **_plain("claude", "a"))
    assert commit(h, "claude", "b", "plain")["reward"] == "150"


def test_a_project_no_contract_matches_is_refused() -> None:
    config = EconomyConfig(
        contracts=[Contract(name="only", pattern="only", multiplier=D(1), budget=D(100))]
    )
    h = Harness(config)
    error = h.refused(ADMIN, c.Commit, ErrorCode.no_contract, **_plain("zero"))
    assert "no contract matches" in error["message"]


def test_the_same_sha_is_never_rewarded_twice() -> None:
    h = Harness()
    commit(h, "claude@aygp-dr.ai", "nexushive-setup", "fix: bug", sha="abc1234")
    error = h.refused(
        ADMIN,
        c.Commit,
        ErrorCode.already_rewarded,
        author="lambda@aygp-dr.ai",
        project="other",
        message="another message entirely",
        sha="abc1234",
    )
    assert "abc1234" in error["message"]
    assert h.balance("claude") == 10_450
    assert h.balance("lambda") == 10_000
    # Commits without a SHA cannot be told apart and are each rewarded.
    commit(h, "zero", "other", "plain")
    commit(h, "zero", "other", "plain")
    assert h.balance("zero") == 10_180


def test_a_refused_commit_does_not_burn_its_sha() -> None:
    h = Harness()
    h.refused(
        ADMIN,
        c.Commit,
        ErrorCode.unknown_agent,
        author="nobody@aygp-dr.ai",
        project="other",
        message="plain",
        sha="feedbeef",
    )
    assert commit(h, "zero", "other", "plain", sha="feedbeef")["reward"] == "90"


@pytest.mark.parametrize("author", ["nobody@aygp-dr.ai", "nobody", "claude.x@aygp-dr.ai", "@x"])
def test_an_unknown_author_is_refused_and_nothing_is_minted(author: str) -> None:
    h = Harness()
    mint_before = h.account("@mint")
    h.refused(
        ADMIN,
        c.Commit,
        ErrorCode.unknown_agent,
        author=author,
        project="nexushive-setup",
        message="fix: bug",
    )
    assert h.account("@mint") == mint_before


@pytest.mark.parametrize("author", ["claude", "claude@aygp-dr.ai", "Claude@Example.COM"])
def test_the_agent_is_the_local_part_of_the_author(author: str) -> None:
    h = Harness()
    assert commit(h, author, "other", "plain")["agent"] == "claude"


# ---------------------------------------------------------------------------------- issues


def issue(h: Harness, issue_id: str, agent: str, priority: str, issue_type: str) -> dict[str, Any]:
    return h.ok(
        ADMIN,
        c.IssueClose,
        issue_id=issue_id,
        agent=agent,
        priority=priority,
        issue_type=issue_type,
    )


def test_a_p2_bug_is_450() -> None:
    h = Harness()
    assert issue(h, "gh-1", "observer", "P2", "bug") == {
        "agent": "observer",
        "issue_id": "gh-1",
        "reward": "450",
        "priority": "P2",
        "issue_type": "bug",
        "balance": "10450",
    }


@pytest.mark.parametrize(
    ("priority", "shown", "base"),
    [
        ("P1", "P1", 500),
        ("P2", "P2", 300),
        ("P3", "P3", 150),
        ("P4", "P4", 75),
        ("P5", "P5", 50),
        ("p3", "P3", 150),
        # The beads tracker numbers priorities 0-4; its N is our P(N+1).
        ("0", "P1", 500),
        ("1", "P2", 300),
        ("4", "P5", 50),
    ],
)
def test_issue_priorities(priority: str, shown: str, base: int) -> None:
    h = Harness()
    result = issue(h, "x-1", "zero", priority, "feature")
    assert (result["priority"], Decimal(result["reward"])) == (shown, Decimal(base))


@pytest.mark.parametrize(
    ("issue_type", "multiplier"),
    [
        ("security", "2.0"),
        ("bug", "1.5"),
        ("feature", "1.0"),
        ("task", "0.8"),
        ("docs", "0.6"),
        ("chore", "0.5"),
        ("BUG", "1.5"),
    ],
)
def test_issue_types(issue_type: str, multiplier: str) -> None:
    h = Harness()
    result = issue(h, "x-1", "zero", "P3", issue_type)
    assert Decimal(result["reward"]) == 150 * Decimal(multiplier)
    assert result["issue_type"] == issue_type.lower()


def test_an_issue_id_is_rewarded_once_ever() -> None:
    h = Harness()
    issue(h, "gh-7", "observer", "P2", "bug")
    error = h.refused(
        ADMIN,
        c.IssueClose,
        ErrorCode.already_rewarded,
        issue_id="gh-7",
        agent="zero",
        priority="P1",
        issue_type="security",
    )
    assert "gh-7" in error["message"]
    assert h.balance("zero") == 10_000


@pytest.mark.parametrize("priority", ["P0", "P6", "5", "high", "", "-1"])
def test_an_unknown_priority_is_refused(priority: str) -> None:
    h = Harness()
    error = h.refused(
        ADMIN,
        c.IssueClose,
        ErrorCode.unknown_priority,
        issue_id="x-1",
        agent="zero",
        priority=priority,
        issue_type="bug",
    )
    assert error["path"] == "$.priority"
    # The refusal did not burn the issue id.
    issue(h, "x-1", "zero", "P2", "bug")


@pytest.mark.parametrize("issue_type", ["epic", "", "bugs"])
def test_an_unknown_issue_type_is_refused(issue_type: str) -> None:
    h = Harness()
    error = h.refused(
        ADMIN,
        c.IssueClose,
        ErrorCode.unknown_issue_type,
        issue_id="x-1",
        agent="zero",
        priority="P2",
        issue_type=issue_type,
    )
    assert error["path"] == "$.issue_type"


def test_an_issue_for_an_unknown_agent_is_refused() -> None:
    h = Harness()
    h.refused(
        ADMIN,
        c.IssueClose,
        ErrorCode.unknown_agent,
        issue_id="x-1",
        agent="nobody",
        priority="P2",
        issue_type="bug",
    )
    issue(h, "x-1", "zero", "P2", "bug")


# ---------------------------------------------------------------------------------- awards


def test_an_operator_award_mints_to_the_agent() -> None:
    h = Harness()
    result = h.ok(
        ADMIN, c.Award, agent="spark", amount=D("12.345678"), source="hackathon", description="1st"
    )
    assert result == {
        "agent": "spark",
        "amount": "12.345678",
        "source": "hackathon",
        "balance": "10012.345678",
    }
    assert h.account("@mint") == -(60_000 + D("12.345678"))


def test_an_award_to_an_unknown_agent_is_refused() -> None:
    h = Harness()
    h.refused(ADMIN, c.Award, ErrorCode.unknown_agent, agent="nobody", amount=D(1), source="s")


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (D(0), ErrorCode.amount_must_be_positive),
        (D(-5), ErrorCode.amount_must_be_positive),
        (D("0.0000001"), ErrorCode.too_many_decimals),
        (D("NaN"), ErrorCode.amount_not_finite),
        (D("Infinity"), ErrorCode.amount_not_finite),
        (D("1000000000000.000001"), ErrorCode.amount_too_large),
    ],
)
def test_award_amount_refusals(amount: Decimal, code: ErrorCode) -> None:
    h = Harness()
    error = h.refused(ADMIN, c.Award, code, agent="zero", amount=amount, source="s")
    assert error["path"] == "$.amount"


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (c.Award, {"agent": "claude", "amount": D(100), "source": "self"}),
        (c.Commit, {"author": "claude", "project": "p", "message": "fix"}),
        (
            c.IssueClose,
            {"issue_id": "x", "agent": "claude", "priority": "P1", "issue_type": "bug"},
        ),
    ],
)
@pytest.mark.parametrize("sender", ["claude", "zero", "nobody"])
def test_agents_cannot_mint(kind: type[c.Command], fields: dict[str, Any], sender: str) -> None:
    h = Harness()
    error = h.refused(sender, kind, ErrorCode.not_authorized, **fields)
    assert "admin" in error["message"]


def test_the_exchange_identity_may_also_mint() -> None:
    h = Harness()
    assert h.ok(EXCHANGE, c.Award, agent="zero", amount=D(1), source="s")["balance"] == "10001"


def _plain(author: str, project: str = "p") -> dict[str, str]:
    return {"author": author, "project": project, "message": "plain"}
