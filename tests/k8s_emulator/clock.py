"""Timestamps in the two wire formats Kubernetes uses."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """metav1.Time: RFC 3339 with second precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """metav1.MicroTime, used by Events and Leases."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
