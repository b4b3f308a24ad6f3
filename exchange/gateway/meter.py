"""The exchange side of the gateway: one NATS request per quota asked for or settled, sent as the
``gateway`` identity. A refused quota is returned as its error body (the app makes it an HTTP
error); an exchange that cannot be reached raises ``ExchangeUnavailableError``.
"""

from typing import Final

import structlog

from protocols import commands as c
from protocols import results as r
from protocols.client import ExchangeClient, new_request_id
from protocols.client_errors import RefusedError
from protocols.ids import GATEWAY

log: Final = structlog.get_logger("exchange.gateway")


class Meter:
    def __init__(self, client: ExchangeClient, *, hold_timeout_s: int) -> None:
        self.client = client
        self.hold_timeout_s = hold_timeout_s

    async def quota(
        self, agent: str, model: str, *, requests: int, tokens: int, min_tokens: int, admit_s: int
    ) -> r.GatewayQuotaResult | r.ErrorBody:
        command = c.GatewayQuota(
            request_id=new_request_id("quota"),
            agent=agent,
            model=model,
            requests=requests,
            tokens=tokens,
            min_tokens=min_tokens,
            admit_s=admit_s,
            timeout_s=self.hold_timeout_s,
        )
        try:
            return await self.client.command(
                GATEWAY, "gateway.quota", command, r.GatewayQuotaResult
            )
        except RefusedError as exc:
            return exc.error

    async def quota_settle(self, quota_id: str, usage: list[tuple[int, int]]) -> None:
        """Charges a quota's usage. A refusal is logged: the quota then expires (voided)."""
        command = c.GatewayQuotaSettle(
            request_id=f"settle-{quota_id}", quota_id=quota_id, usage=usage
        )
        try:
            await self.client.command(
                GATEWAY, "gateway.quota_settle", command, r.GatewayQuotaSettlementResult
            )
        except RefusedError as exc:
            log.error("gateway_quota_settle_refused", quota_id=quota_id, error=exc.code)
