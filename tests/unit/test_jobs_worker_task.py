"""The Celery task around `JobRunner`: a bug in a job fails it with a reason instead of
leaving it `running` forever (run eagerly, no broker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.jobs.queue import RUN_JOB_TASK, create_celery_app
from services.jobs.runner import Finished, RunOutcome
from services.jobs.settings import JobsSettings
from services.jobs.worker import register_job_task


@dataclass
class BrokenRunner:
    """Raises what a bug would; records the jobs it was asked to fail."""

    failed: list[tuple[str, str]] = field(default_factory=list)

    def run(self, job_id: str) -> RunOutcome:
        raise RuntimeError("a bug")

    def fail(self, job_id: str, reason: str) -> None:
        self.failed.append((job_id, reason))


@dataclass
class WorkingRunner(BrokenRunner):
    def run(self, job_id: str) -> RunOutcome:
        return Finished()


def run_eagerly(runner: BrokenRunner) -> None:
    settings = JobsSettings(broker_url="redis://127.0.0.1:1/0", upstreams={"s": "http://s"})
    app = create_celery_app(settings)
    register_job_task(app, runner, max_transient_retries=2)  # type: ignore[arg-type]
    app.tasks[RUN_JOB_TASK].apply(args=["0" * 32])


def test_an_unexpected_error_fails_the_job_with_a_reason() -> None:
    runner = BrokenRunner()

    run_eagerly(runner)

    assert runner.failed == [("0" * 32, "internal error in the jobs worker; see its log")]


def test_a_job_that_ran_is_not_failed() -> None:
    runner = WorkingRunner()

    run_eagerly(runner)

    assert runner.failed == []
