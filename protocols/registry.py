"""Which Struct each verb carries, and one reusable Decoder per verb (built once, at import)."""

from collections.abc import Callable
from typing import Final

import msgspec

from protocols import commands as c
from protocols import cooperation as coop
from protocols import credit as cr
from protocols import futures as fu
from protocols import queries as q
from protocols import results as r
from protocols import swarm as s
from protocols.wire import wire_decoder

COMMANDS: Final[dict[str, type[c.Command]]] = {
    "agent.register": c.RegisterAgent,
    "transfer": c.Transfer,
    "award": c.Award,
    "commit": c.Commit,
    "issue.close": c.IssueClose,
    "llm": c.LlmRequest,
    "llm.authorize": c.LlmAuthorize,
    "llm.settle": c.LlmSettle,
    "gateway.authorize": c.GatewayAuthorize,
    "gateway.settle": c.GatewaySettle,
    "gateway.release": c.GatewayRelease,
    "gateway.quota": c.GatewayQuota,
    "gateway.quota_settle": c.GatewayQuotaSettle,
    "limits.set": c.SetLimits,
    "pool.create": c.PoolCreate,
    "pool.join": c.PoolJoin,
    "pool.contribute": c.PoolContribute,
    "pool.spend": c.PoolSpend,
    "pool.close": c.PoolClose,
    "tick": c.Tick,
    "timer.drop": c.DropTimer,
    "task.announce": s.AnnounceTask,
    "task.verify": s.VerifyTask,
    "task.cancel": s.CancelTask,
    "escrow.lock": s.LockEscrow,
    "escrow.release": s.ReleaseEscrow,
    "escrow.dispute": s.DisputeEscrow,
    "escrow.resolve": s.ResolveEscrow,
    "vote.propose": s.ProposeVote,
    "vote.ratify": s.RatifyVote,
    "pool.deposit": coop.PoolDeposit,
    "pool.distribute": coop.PoolDistribute,
    "coalition.form": coop.FormCoalition,
    "coalition.end": coop.EndCoalition,
    "future.write": fu.WriteFuture,
    "future.buy": fu.BuyFuture,
    "future.take": fu.TakeFuture,
    "future.list": fu.ListFuture,
    "import.opening": c.ImportOpening,
    "import.history": c.ImportHistory,
    "stake": cr.Stake,
    "stake.unstake": cr.Unstake,
    "loan.offer": cr.OfferLoan,
    "loan.accept": cr.AcceptLoan,
    "loan.cancel": cr.CancelLoan,
    "loan.repay": cr.RepayLoan,
    # Made by the exchange from what agents publish on swarm.* subjects (see protocols.routes);
    # listed here so that the journal can replay them.
    "task.propose": s.SubmitBid,
    "task.refuse": s.SubmitRefusal,
    "task.report": s.SubmitResult,
    "vote.cast": s.CastVote,
    "signal.observe": s.ObserveSignal,
}

QUERIES: Final[dict[str, type[q.Query]]] = {
    "balance": q.BalanceQuery,
    "history": q.HistoryQuery,
    "limits": q.LimitsQuery,
    "agents": q.AgentsQuery,
    "pool": q.PoolQuery,
    "pools": q.PoolsQuery,
    "status": q.StatusQuery,
    "signals": q.SignalsQuery,
    "pheromones": q.PheromonesQuery,
    "task": q.TaskQuery,
    "tasks": q.TasksQuery,
    "escrow": q.EscrowQuery,
    "proposal": q.ProposalQuery,
    "metrics": q.MetricsQuery,
    "shapley": coop.ShapleyQuery,
    "future": fu.FutureQuery,
    "futures": fu.FuturesQuery,
    "stakes": cr.StakesQuery,
    "loan": cr.LoanQuery,
    "loans": cr.LoansQuery,
}

# The result object each query's reply carries (``{"ok": true, "result": ...}``); a test asks the
# exchange every query and decodes its answer as this type.
QUERY_RESULTS: Final[dict[str, type[r.Result]]] = {
    "balance": r.BalanceResult,
    "history": r.HistoryResult,
    "limits": r.LimitsResult,
    "agents": r.AgentsResult,
    "pool": r.PoolResult,
    "pools": r.PoolsResult,
    "status": r.StatusResult,
    "signals": s.SignalsResult,
    "pheromones": s.PheromonesResult,
    "task": s.TaskView,
    "tasks": s.TasksResult,
    "escrow": s.EscrowView,
    "proposal": s.ProposalView,
    "metrics": r.MetricsResult,
    "shapley": coop.ShapleyShares,
    "future": fu.FutureView,
    "futures": fu.FuturesResult,
    "stakes": cr.StakesResult,
    "loan": cr.LoanView,
    "loans": cr.LoansResult,
}

VERB_OF: Final[dict[type[c.Command], str]] = {t: v for v, t in COMMANDS.items()}

# For what the exchange itself wrote (the journal's replay): whatever it once accepted decodes.
COMMAND_DECODERS: Final[dict[str, msgspec.json.Decoder[c.Command]]] = {
    verb: msgspec.json.Decoder(t) for verb, t in COMMANDS.items()
}
# For what peers send: the same, and amount strings only in the published grammar (raises
# protocols.wire.AmountSyntaxError, a msgspec.ValidationError, for one outside it).
WIRE_COMMAND_DECODERS: Final[dict[str, Callable[[bytes | str], c.Command]]] = {
    verb: wire_decoder(t) for verb, t in COMMANDS.items()
}
QUERY_DECODERS: Final[dict[str, msgspec.json.Decoder[q.Query]]] = {
    verb: msgspec.json.Decoder(t) for verb, t in QUERIES.items()
}
