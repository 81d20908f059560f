"""Calls to the API server with a timeout each and jittered retries within a budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

T = TypeVar("T")
RETRYABLE = {429, 500, 502, 503, 504}


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE
    return isinstance(exc, (aiohttp.ClientError, TimeoutError))


class KubeClient:
    """One ApiClient per deployer, created on first use from a kubeconfig or in-cluster."""

    def __init__(
        self,
        kubeconfig: str | None,
        *,
        call_timeout: float = 10.0,
        retry_budget: float = 30.0,
        on_error: Callable[[int], None] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.call_timeout = call_timeout
        self.retry_budget = retry_budget
        # Every failed attempt's HTTP status (0: no answer), for the operators' metrics.
        self.on_error = on_error
        self._api: client.ApiClient | None = None

    async def api(self) -> client.ApiClient:
        if self._api is None:
            cfg = client.Configuration()
            if self.kubeconfig:
                await config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            self._api = client.ApiClient(configuration=cfg)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.call_timeout)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.retry_budget),
            reraise=True,
        ):
            with attempt:
                try:
                    return await fn(*args, **kwargs)
                except ApiException as exc:
                    self._count(int(exc.status or 0))
                    raise
                except (aiohttp.ClientError, TimeoutError):
                    self._count(0)
                    raise
        raise AssertionError("unreachable: tenacity reraises")

    def _count(self, status: int) -> None:
        if self.on_error is not None:
            self.on_error(status)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        assert self._api is not None
        data: dict[str, Any] = self._api.sanitize_for_serialization(obj)
        return data
