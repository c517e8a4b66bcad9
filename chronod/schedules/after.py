"""``after = "extract"``: a job with no slots of its own, run after each qualifying end of another
job's runs.

Semantics: docs/schedules.md ("Chains"). The runs are decided by the store when the upstream run
ends ("Chains" in :mod:`chronod.store.base`), never by the leader's clock: this schedule has no
fires, so the leader never dispatches a slot of the job. It exists so that such a job has a
fingerprint (its upstreams and ``when``) and words for ``chronod next``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chronod.schedules.base import Fire, Schedule
from chronod.store.records import When
from chronod.tz import Zone


class AfterSchedule(Schedule):
    """Runs after each ``when`` end of a run of one of ``upstreams``; no fires of its own."""

    def __init__(self, upstreams: tuple[str, ...], when: When, zone: Zone) -> None:
        if not upstreams:
            raise ValueError("expected at least one upstream job")
        self.upstreams = upstreams
        self.when: When = when
        self.zone = zone

    def _first_after(self, after: datetime) -> Fire | None:
        return None

    def canonical(self) -> dict[str, Any]:
        return {"kind": "after", "after": list(self.upstreams), "when": self.when}

    def describe(self) -> str:
        return f"after {', '.join(self.upstreams)} ({self.when})"
