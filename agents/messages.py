"""What an executor reports as a task's output, and how the others read it back.

``PaperTrade`` is the ``output`` of an ``execute`` task (``TaskReport.output``, then
``TaskView.output``): the executor writes it; the treasury, the arbiter and risk read it. It is a
convention among these workers, not part of the exchange's protocol, which carries outputs as
free-form objects. Every message the exchange defines (results, the task and escrow views) comes
from ``protocols/`` itself.

Pure: a Struct, and ``trade_of`` to read a trade back from an output.
"""

from decimal import Decimal
from typing import Any

import msgspec


class PaperTrade(msgspec.Struct, frozen=True, kw_only=True):
    """A simulated fill, reported as the output of an ``execute`` task."""

    asset: str
    direction: str
    size: Decimal
    fill_price: Decimal
    oracle_price: Decimal
    at_ns: int
    at: str
    executor: str


def trade_of(output: dict[str, Any]) -> PaperTrade | None:
    """The paper trade in a task's output, or None when the output is not one.

    Amounts arrive as decimal strings (or numbers) in JSON, hence the lax conversion.
    """
    try:
        return msgspec.convert(output, PaperTrade, strict=False)
    except msgspec.ValidationError:
        return None
