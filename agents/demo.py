"""The roster of the Contract Net auction demo: who runs, with which role options, registered how.

Pure data for whoever orchestrates the demo (``exchange demo auction`` registers each agent
through admin with ``registration``, then starts ``python -m agents`` with ``argv``). With the
default seed the run is repeatable: the oracle's walks, the executors' jitter and the analyst's
text come from ``--seed``; the treasury disputes its second result on purpose (``--dispute-nth``)
so the arbiter has one dispute to resolve, and ``exec-sloppy`` fills off the market, so whatever
it wins is disputed by the verification itself and refunded by the arbiter.

Must not: start processes or talk to NATS (the orchestrator does).
"""

from typing import Final

import msgspec

DEMO_SEED: Final = 7


class DemoAgent(msgspec.Struct, frozen=True, kw_only=True):
    """One worker of the demo. ``role`` is the CLI role; ``exchange_role`` the registered one."""

    agent: str
    role: str
    exchange_role: str
    capabilities: tuple[str, ...] = ()
    primary_llm: str = "llama3.2"
    base_rate: str = "100"
    options: tuple[str, ...] = ()

    def registration(self) -> dict[str, object]:
        """The body of ``exchange.cmd.admin.agent.register`` for this agent (without request_id)."""
        return {
            "agent": self.agent,
            "base_rate": self.base_rate,
            "primary_llm": self.primary_llm,
            "role": self.exchange_role,
            "capabilities": list(self.capabilities),
        }

    def argv(self, *connection: str, seed: int = DEMO_SEED) -> list[str]:
        """``python -m agents`` arguments; ``connection`` is ``--data DIR``, ``--creds FILE`` or
        ``--nats URL``."""
        return [self.role, "--id", self.agent, *connection, "--seed", str(seed), *self.options]


AUCTION_DEMO: Final = (
    DemoAgent(
        agent="oracle",
        role="oracle",
        exchange_role="oracle",
        options=("--assets", "BTC,ETH,SOL", "--tick-ms", "200"),
    ),
    DemoAgent(
        agent="scout-1", role="scout", exchange_role="scout", options=("--assets", "BTC,ETH")
    ),
    DemoAgent(agent="scout-2", role="scout", exchange_role="scout", options=("--assets", "SOL")),
    DemoAgent(
        agent="treasury",
        role="treasury",
        exchange_role="treasury",
        options=("--bid-window-ms", "300", "--cooldown-ms", "4000", "--dispute-nth", "2"),
    ),
    DemoAgent(agent="arbiter", role="arbiter", exchange_role="treasury"),
    DemoAgent(
        agent="exec-fast",
        role="executor",
        exchange_role="executor",
        capabilities=("execute",),
        options=("--cost-fraction", "0.6", "--time-ms", "60", "--confidence", "0.9"),
    ),
    DemoAgent(
        agent="exec-cheap",
        role="executor",
        exchange_role="executor",
        capabilities=("execute",),
        options=("--cost-fraction", "0.4", "--time-ms", "300", "--confidence", "0.75"),
    ),
    DemoAgent(
        agent="exec-sloppy",
        role="executor",
        exchange_role="executor",
        capabilities=("execute",),
        options=(
            "--cost-fraction",
            "0.45",
            "--time-ms",
            "200",
            "--confidence",
            "0.75",
            "--slippage-bps",
            "120",
        ),
    ),
    DemoAgent(agent="risk", role="risk", exchange_role="risk"),
    DemoAgent(
        agent="analyst",
        role="analyst",
        exchange_role="analyst",
        options=("--every-nth", "2", "--model", "llama3.2"),
    ),
)
