"""Ready means reachable: the public URL serves the UI page, an asset and the staged data."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urljoin

import aiohttp

from idds_vis.domain.errors import NotReachable
from idds_vis.domain.models import Deployment

_SCRIPT = re.compile(r'<script[^>]+src="([^"]+\.js)"')


class HttpReadinessProbe:
    def __init__(self, *, attempts: int = 20, interval: float = 0.5, timeout: float = 15) -> None:
        self.attempts = attempts
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def verify(self, deployment: Deployment, experiments: tuple[str, ...]) -> None:
        """Retry briefly: the first requests after /health may still warm the app up."""
        last: NotReachable | None = None
        for _ in range(self.attempts):
            try:
                await self._check(deployment, experiments)
                return
            except NotReachable as exc:
                last = exc
            await asyncio.sleep(self.interval)
        assert last is not None
        raise last

    async def _check(self, deployment: Deployment, experiments: tuple[str, ...]) -> None:
        headers = {"Host": deployment.host_header} if deployment.host_header else {}
        # A UI behind the web app's proxy is probed directly, with the proxy's header.
        headers.update(deployment.probe_headers)
        url = deployment.probe_url or deployment.url
        async with aiohttp.ClientSession(timeout=self.timeout, headers=headers) as session:

            async def page_and_asset() -> None:
                index = await self._get_text(session, url, "UI page")
                match = _SCRIPT.search(index)
                if not match:
                    raise NotReachable(f"the UI page at {url} names no script asset")
                await self._get_start(session, urljoin(url, match.group(1)), "UI asset")

            # The page (then its asset) and the experiment list at once: one round trip less.
            api = urljoin(url, "ajax-api/2.0/mlflow/experiments/search")
            _, listed = await asyncio.gather(
                page_and_asset(), self._post_json(session, api, {"max_results": 1000})
            )
            names = {e.get("name") for e in listed.get("experiments", [])}
            missing = [name for name in experiments if name not in names]
            if missing:
                raise NotReachable(
                    f"the UI at {url} does not list the staged experiment(s) "
                    + ", ".join(repr(m) for m in missing)
                )

    @staticmethod
    async def _get_text(session: aiohttp.ClientSession, url: str, what: str) -> str:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise NotReachable(f"{what} at {url} answered HTTP {resp.status}")
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotReachable(f"{what} at {url} is unreachable: {exc}") from exc

    @staticmethod
    async def _get_start(session: aiohttp.ClientSession, url: str, what: str) -> None:
        """The asset is served: its first KiB suffices (MLflow's main script is ~4 MB, whose
        transfer and decoding was most of a warm UI's probe)."""
        try:
            async with session.get(url, headers={"Range": "bytes=0-1023"}) as resp:
                if resp.status not in (200, 206):
                    raise NotReachable(f"{what} at {url} answered HTTP {resp.status}")
                if not await resp.content.read(1024):
                    raise NotReachable(f"{what} at {url} is empty")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotReachable(f"{what} at {url} is unreachable: {exc}") from exc

    @staticmethod
    async def _post_json(
        session: aiohttp.ClientSession, url: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    raise NotReachable(f"experiment list at {url} answered HTTP {resp.status}")
                data: dict[str, Any] = await resp.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise NotReachable(f"experiment list at {url} is unreachable: {exc}") from exc
