"""Ray Jobs, as the job runner uses it: submit `python -m training SPEC`, ask a job's status,
read its log, stop it. The only module that imports ray.job_submission."""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import events

log = logging.getLogger("ray.serve")

# Ray Train gives up on starting its workers after 60 s; a GPU node scaled up from zero, or a
# busy machine, takes longer
WORKER_START_TIMEOUT_S = 900


@dataclass(frozen=True)
class JobState:
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    exit_code: int | None

    @property
    def terminal(self) -> bool:
        return self.status not in ("PENDING", "RUNNING")


class RayJobs:
    """`command` runs a spec: `python -m training` (a test gives a stand-in of its own)."""

    def __init__(self, address: str | None = None, command: list[str] | None = None):
        self.address = address
        self.command = command or [sys.executable, "-m", "training"]
        self._client: Any = None
        self._gcs: str | None = None

    @property
    def client(self):
        if self._client is None:
            import ray
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(
                self.address or ray.get_runtime_context().gcs_address
            )
            # every process of the job talks to this cluster, even where a machine runs more
            # than one Ray (Ray's own helpers otherwise refuse to pick one)
            self._gcs = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        return self._client

    def submit(
        self, submission_id: str, spec_path: Path, home: Path, metadata: dict, events_dir: Path
    ) -> bool:
        """Submit the run, its events written under `events_dir` (by every process of the job:
        a job's runtime_env reaches its workers); True if Ray has it (a submission that
        already exists counts: the runner wrote its id before a crash)."""
        client = self.client
        entry = shlex.join([*self.command, str(spec_path), "--home", str(home)])
        env = {
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(WORKER_START_TIMEOUT_S),
            events.EVENTS_DIR_ENV: str(events_dir),
        }
        if self._gcs:  # named outright: Ray's "auto" guesses wrong beside a second Ray
            entry += f" --ray-address {shlex.quote(self._gcs)}"
            env["RAY_ADDRESS"] = self._gcs
        try:
            client.submit_job(
                entrypoint=entry,
                submission_id=submission_id,
                entrypoint_num_cpus=0,
                metadata=metadata,
                runtime_env={"env_vars": env},
            )
        except RuntimeError as exc:
            if "already exists" not in str(exc):
                log.warning("submitting %s failed (%s); retrying next tick", submission_id, exc)
                return False
        return True

    def state(self, submission_id: str) -> JobState | None:
        """The job's state, or None when Ray does not know it (the cluster was replaced)."""
        try:
            info = self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise
        return JobState(str(info.status), info.driver_exit_code)

    def logs(self, submission_id: str) -> str:
        return self.client.get_job_logs(submission_id)

    def stop(self, submission_id: str) -> None:
        self.client.stop_job(submission_id)
