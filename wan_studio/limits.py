"""Per-user limits for a shared app: how big one job may be, how many jobs one user may queue."""

from __future__ import annotations

from dataclasses import dataclass

from wan_studio.engine.request import GenerationRequest, RequestError

# One unit = one megapixel through one frame through one denoising step.
BEGINNER_720P_COST = 1280 * 704 * 121 * 50 / 1e6


@dataclass(frozen=True)
class UserLimits:
    """Limits for users without the admin role; ``None`` means unlimited.

    ``max_job_cost`` is in megapixel·frame·steps (width × height × frames × steps / 10⁶); the
    beginner 720p preset costs about 5,450.
    """

    max_job_cost: float | None = None
    max_queued_jobs: int | None = None

    @classmethod
    def for_sharing(cls) -> UserLimits:
        """Defaults once the app is reachable by others: two 720p 5 s jobs' worth, five queued jobs."""
        return cls(max_job_cost=2 * BEGINNER_720P_COST, max_queued_jobs=5)


def job_cost(request: GenerationRequest) -> float:
    """Megapixel·frame·steps of a resolved request."""
    return request.width * request.height * request.num_frames * request.steps / 1e6


def check_job_cost(request: GenerationRequest, limits: UserLimits, is_admin: bool) -> None:
    """Refuse a resolved request larger than the per-job limit, saying what to reduce."""
    if is_admin or limits.max_job_cost is None:
        return
    cost = job_cost(request)
    if cost > limits.max_job_cost:
        share = limits.max_job_cost / cost
        raise RequestError(
            f"this job is too large for a shared account: {request.width}×{request.height}, "
            f"{request.num_frames} frames, {request.steps} steps is {cost / limits.max_job_cost:.1f}× the "
            f"allowed size; cut frames, steps or pixels to {share:.0%} of that, or ask an admin"
        )


def check_queue_quota(queued_now: int, limits: UserLimits, is_admin: bool) -> None:
    """Refuse one more job from a user who already has ``queued_now`` jobs waiting or running."""
    if is_admin or limits.max_queued_jobs is None:
        return
    if queued_now >= limits.max_queued_jobs:
        raise RequestError(
            f"you already have {queued_now} jobs in the queue (the limit is {limits.max_queued_jobs}); "
            "wait for one to finish or cancel one"
        )
