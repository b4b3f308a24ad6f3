"""Import (docs/economy.md, Import): the opening entries of an exchange built from another's
export or from seed 1's wallet files. Each moves an agent's balance from ``@import`` (the opening
equity, which may go negative like ``@mint``) by double entry, and sets the earned and spent
totals it brings. Stateless: its effects are the ledger's.
"""

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Ledger
from exchange.core.refusals import Refusal, refuse
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_micro, to_micro
from protocols.errors import ErrorCode


class Imports:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def opening(self, sender: str, cmd: c.ImportOpening) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if (denied := ledger.require_admin(sender, "import.opening")) is not None:
            return denied
        agent = ledger.agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        totals = []
        for field in ("earned", "spent"):
            micro = to_micro(getattr(cmd, field))
            if type(micro) is not int or micro < 0:
                return refuse(
                    ErrorCode.invalid_amount,
                    f"{field} is a total of tokens, 0 or more with at most 6 decimals; "
                    f"got {getattr(cmd, field)}",
                    path=f"$.{field}",
                )
            totals.append(micro)
        ledger.book.post(acc.IMPORT, agent.id, amount, "opening", cmd.source)
        agent.earned_micro += totals[0]
        agent.spent_micro += totals[1]
        return r.RegisterResult(agent=agent.id, balance=format_micro(ledger.book.balance(agent.id)))
