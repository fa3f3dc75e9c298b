"""The one replica that moves jobs along (service/jobs/runner.py) every `poll_s`.

Serve restarts it if it dies, and a new one carries on from the database. Its health check
fails when the loop has stopped, so a stuck runner is replaced too.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ray import serve
from sqlalchemy.exc import OperationalError

from service.db import Database
from service.deployments.network import bind_replica_grpc_to_node_ip
from service.jobs.ray_jobs import RayJobs
from service.jobs.runner import JobRunner, RunnerLimits
from service.settings import replica_db_url

log = logging.getLogger("ray.serve")


@serve.deployment(name="jobs", num_replicas=1, ray_actor_options={"num_cpus": 0})
class JobRunnerServer:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, home: str, db_url: str, *, poll_s: float, address: str | None, limits: dict
    ):
        bind_replica_grpc_to_node_ip()
        # the schema is brought up to date by the first tick that reaches the database: a
        # database that is down when the service starts must not stop it starting (the API
        # answers 503 for what needs it, and inference serves)
        self.db = Database(replica_db_url(db_url))
        self.runner = JobRunner(self.db, Path(home), RayJobs(address), RunnerLimits(**limits))
        self.poll_s = poll_s
        self._task = asyncio.create_task(self._loop())

    def _tick(self) -> None:
        self.db.ready()
        self.runner.tick()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._tick)
            except RuntimeError as exc:
                if "after shutdown" in str(exc):  # the replica is stopping
                    return
                log.exception("job runner tick failed")
            except OperationalError as exc:  # the database is away: try again next tick
                log.warning(
                    "job runner: the database cannot be reached (%s)", type(exc.orig).__name__
                )
            except Exception:
                log.exception("job runner tick failed")
            await asyncio.sleep(self.poll_s)

    async def check_health(self) -> None:
        if self._task.done():
            raise RuntimeError("the job loop has stopped")
