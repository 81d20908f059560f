"""The SQL ledger (SQLAlchemy async): SQLite by default, PostgreSQL for shared deployments."""

from idds_vis.ledger.sql import SqlLedger
from idds_vis.ledger.urls import async_url

__all__ = ["SqlLedger", "async_url"]
