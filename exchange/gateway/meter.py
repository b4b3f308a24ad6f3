"""The exchange side of the gateway: one NATS request per authorize, settle or release, sent as
the ``gateway`` identity. A refusal is returned as its error body (the app makes it an HTTP
error); an exchange that cannot be reached raises ``ExchangeUnavailableError``.
"""

from typing import Final

import structlog

from protocols import commands as c
from protocols import results as r
from protocols.client import ExchangeClient
from protocols.client_errors import RefusedError
from protocols.ids import GATEWAY

log: Final = structlog.get_logger("exchange.gateway")


class Meter:
    def __init__(self, client: ExchangeClient, *, hold_timeout_s: int) -> None:
        self.client = client
        self.hold_timeout_s = hold_timeout_s

    async def authorize(
        self, agent: str, model: str, prompt_tokens: int, max_tokens: int
    ) -> r.GatewayAuthorizationResult | r.ErrorBody:
        body = {
            "agent": agent,
            "model": model,
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "timeout_s": self.hold_timeout_s,
        }
        try:
            return await self.client.command(
                GATEWAY, "gateway.authorize", body, r.GatewayAuthorizationResult
            )
        except RefusedError as exc:
            return exc.error

    async def settle(
        self, authorization_id: str, prompt_tokens: int, completion_tokens: int
    ) -> r.GatewaySettlementResult | None:
        """Charges the usage. None if refused (logged: the hold then expires, voided)."""
        command = c.GatewaySettle(
            request_id=f"settle-{authorization_id}",
            authorization_id=authorization_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        try:
            return await self.client.command(
                GATEWAY, "gateway.settle", command, r.GatewaySettlementResult
            )
        except RefusedError as exc:
            log.error("gateway_settle_refused", authorization_id=authorization_id, error=exc.code)
            return None

    async def release(self, authorization_id: str, reason: str) -> None:
        command = c.GatewayRelease(
            request_id=f"release-{authorization_id}",
            authorization_id=authorization_id,
            reason=reason[:4096],
        )
        try:
            await self.client.command(GATEWAY, "gateway.release", command, r.Result)
        except RefusedError as exc:
            log.error("gateway_release_refused", authorization_id=authorization_id, error=exc.code)
