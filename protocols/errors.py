"""Stable refusal codes. A shipped code is never renamed and never given a new meaning.

Codes are listed roughly in order of precedence: wire-level problems first, then identity, then
amounts, then business rules.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    # Wire and routing.
    invalid_message = "invalid_message"
    unknown_verb = "unknown_verb"
    message_too_large = "message_too_large"
    overloaded = "overloaded"
    # The exchange failed applying this one command (a broken invariant, a bug): it refused it,
    # kept its state as it was before it, and serves on. Safe to retry; report it if it repeats.
    internal_error = "internal_error"
    # A query beyond the size or time the exchange spends on one request.
    query_too_large = "query_too_large"
    query_timed_out = "query_timed_out"
    # Identity and permission.
    not_authorized = "not_authorized"
    invalid_agent_id = "invalid_agent_id"
    unknown_agent = "unknown_agent"
    agent_exists = "agent_exists"
    unknown_model = "unknown_model"
    # Amounts.
    amount_must_be_positive = "amount_must_be_positive"
    too_many_decimals = "too_many_decimals"
    amount_not_finite = "amount_not_finite"
    amount_too_large = "amount_too_large"
    # A string amount outside the grammar (protocols.amounts.AMOUNT_PATTERN): ASCII digits, an
    # optional leading '-', an optional point with digits after it. Past 6 decimal places a
    # grammatical amount is too_many_decimals.
    invalid_amount = "invalid_amount"
    # Idempotency.
    request_id_reused = "request_id_reused"
    # Balances and limits (in the order limits are checked).
    burst_limit_exceeded = "burst_limit_exceeded"
    reserve_would_be_breached = "reserve_would_be_breached"
    hourly_limit_exceeded = "hourly_limit_exceeded"
    daily_limit_exceeded = "daily_limit_exceeded"
    insufficient_funds = "insufficient_funds"
    # Rewards.
    contract_budget_exhausted = "contract_budget_exhausted"
    no_contract = "no_contract"
    already_rewarded = "already_rewarded"
    unknown_priority = "unknown_priority"
    unknown_issue_type = "unknown_issue_type"
    # Inference authorizations.
    unknown_authorization = "unknown_authorization"
    authorization_closed = "authorization_closed"
    # The metering gateway (docs/gateway.md): per-agent requests and tokens per minute, and the
    # models an agent may call.
    rate_limited_rpm = "rate_limited_rpm"
    rate_limited_tpm = "rate_limited_tpm"
    model_not_allowed = "model_not_allowed"
    gateway_required = "gateway_required"
    # Pools.
    unknown_pool = "unknown_pool"
    pool_closed = "pool_closed"
    below_min_contribution = "below_min_contribution"
    not_pool_member = "not_pool_member"
    already_pool_member = "already_pool_member"
    pool_empty = "pool_empty"
    # Market (Contract Net, escrow, votes).
    unknown_task = "unknown_task"
    task_closed = "task_closed"
    bid_window_closed = "bid_window_closed"
    bid_exceeds_max_cost = "bid_exceeds_max_cost"
    bid_exceeds_deadline = "bid_exceeds_deadline"
    duplicate_bid = "duplicate_bid"
    not_task_executor = "not_task_executor"
    unknown_escrow = "unknown_escrow"
    escrow_not_locked = "escrow_not_locked"
    escrow_not_disputed = "escrow_not_disputed"
    unknown_proposal = "unknown_proposal"
    proposal_closed = "proposal_closed"
    already_voted = "already_voted"
    not_eligible = "not_eligible"
    invalid_ballot = "invalid_ballot"
    # Governance (who may propose what, to whom, within which bounds) and self-dealing.
    electorate_not_allowed = "electorate_not_allowed"
    vote_kind_not_allowed = "vote_kind_not_allowed"
    parameter_out_of_bounds = "parameter_out_of_bounds"
    not_ratifiable = "not_ratifiable"
    self_dealing = "self_dealing"
    reward_rounds_to_zero = "reward_rounds_to_zero"
    # Staking and lending (docs/economy.md, Staking and Lending).
    unknown_stake = "unknown_stake"
    stake_locked = "stake_locked"
    stake_closed = "stake_closed"
    unknown_loan = "unknown_loan"
    loan_closed = "loan_closed"
    # Compute futures (docs/economy.md, Compute futures).
    unknown_future = "unknown_future"
    future_not_open = "future_not_open"
    price_mismatch = "price_mismatch"
