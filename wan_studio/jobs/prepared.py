"""A request prepared once at submission: validated and resolved, its model, its plan, its warnings.

The queue stores it and the executors take the request as a typed object; it becomes a dict only
where it crosses a transport (the SQLite row, the worker pipe, a Ray call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wan_studio.catalog.specs import ModelSpec
from wan_studio.engine.request import GenerationRequest
from wan_studio.memory.plan import Plan


@dataclass(frozen=True)
class PreparedJob:
    """``request`` validated and resolved (defaults and seed filled in); ``plan`` the memory plan
    chosen for it on this machine (None where the head does not plan, e.g. for demo models on a
    machine without telemetry); ``warnings`` sentences for the user made at submission (VRAM);
    ``extra`` notes for the job's sidecar."""

    request: GenerationRequest
    spec: ModelSpec
    plan: Plan | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def sidecar_notes(self) -> dict[str, Any]:
        """What the job's sidecar gets from its preparation: its notes, its warnings, the plan
        chosen at submission (the worker plans again on its own GPU and records what it ran)."""
        notes = dict(self.extra)
        if self.warnings:
            notes["vram_warnings"] = list(self.warnings)
        if self.plan is not None:
            notes["planned_at_submit"] = self.plan.label
        return notes
