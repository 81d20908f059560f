"""The audit trail: who changed which visualization, how, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Action:
    at: datetime
    actor: str
    action: str  # "start", "queue", "extend", "stop", "relaunch", "cancel", "end"
    task_id: str
    tool: str
    attempt: int | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "task_id": self.task_id,
            "tool": self.tool,
            "attempt": self.attempt,
            "detail": self.detail,
        }
