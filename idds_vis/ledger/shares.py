"""The share links of ``SqlLedger`` (issue 17): see ``idds_vis.ports.ledger.ShareLedger``.

A share and its audit entry are written in one transaction: a share exists only if its
creation is in the audit trail, and a revocation likewise.
"""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import Connection, delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from idds_vis.domain.models import InstanceKey
from idds_vis.domain.share_links import Share
from idds_vis.ledger import ops
from idds_vis.ledger.access import insert_audit
from idds_vis.ledger.runner import Runner
from idds_vis.ledger.schema import shares


def _share(row: RowMapping) -> Share:
    return Share(
        id=row["id"],
        task_id=row["task_id"],
        tool=row["tool"],
        path_token=row["path_token"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        token_hash=row["token_hash"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        label=row["label"],
    )


class ShareLedgerMixin:
    """Mixed into ``SqlLedger``."""

    _db: Runner

    async def add_share(self, share: Share, *, attempt: int | None, detail: str) -> Share:
        ops.aware("created_at", share.created_at)
        ops.aware("expires_at", share.expires_at)
        values = {
            "id": share.id, "task_id": share.task_id, "tool": share.tool,
            "path_token": share.path_token, "token_hash": share.token_hash,
            "created_by": share.created_by, "created_at": share.created_at,
            "expires_at": share.expires_at, "label": share.label,
        }  # fmt: skip

        def run(conn: Connection) -> None:
            conn.execute(insert(shares).values(values))
            insert_audit(conn, share.created_by, "share-create", share.key, share.created_at,
                         attempt, detail)  # fmt: skip

        await self._db.write(run)
        return share

    async def get_share(self, share_id: str) -> Share | None:
        query = select(shares).where(shares.c.id == share_id)
        row = await self._db.read(lambda conn: conn.execute(query).mappings().first())
        return _share(row) if row is not None else None

    async def shares_of(self, key: InstanceKey) -> builtins.list[Share]:
        query = (
            select(shares)
            .where(shares.c.task_id == key.task_id, shares.c.tool == key.tool)
            .order_by(shares.c.created_at.desc(), shares.c.id)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [_share(row) for row in rows]

    async def revoke_share(
        self, share_id: str, by: str, now: datetime, *, detail: str
    ) -> Share | None:
        """Revoke (once: a second revocation keeps the first's time and author)."""
        ops.aware("now", now)

        def run(conn: Connection) -> RowMapping | None:
            done = conn.execute(
                update(shares).where(shares.c.id == share_id, shares.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=by)
            )  # fmt: skip
            row = conn.execute(select(shares).where(shares.c.id == share_id)).mappings().first()
            if row is not None and done.rowcount:
                key = InstanceKey(row["task_id"], row["tool"])
                insert_audit(conn, by, "share-revoke", key, now, None, detail)
            return row

        row = await self._db.write(run)
        return _share(row) if row is not None else None

    async def purge_shares(self, before: datetime) -> int:
        """Delete the records of shares that ended (revoked or expired) before ``before``; the
        audit trail keeps their entries. How many went."""
        ops.aware("before", before)
        query = delete(shares).where(
            or_(shares.c.revoked_at < before, shares.c.expires_at < before)
        )

        def run(conn: Connection) -> int:
            return int(conn.execute(query).rowcount or 0)

        return await self._db.write(run)
