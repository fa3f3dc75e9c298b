"""The whole service killed by PID mid-job: `tuneserve run` (the Ray driver, and with it the
local Ray cluster, the Ray Job and its training worker) gets SIGKILL while a job trains. A
second `tuneserve run` on the same home finds the job in the database, submits it again, Ray
Train resumes from the last checkpoint, and the job is finished and recorded exactly once.

This is what a Kubernetes head pod lost with its cluster looks like, on one machine: its own
Ray (not the session's), its own process group, its own temp dir, all on 127.0.0.1; its
database is PostgreSQL, reached with a URL that holds a password.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import fresh_pg_database, resumed_step, wait_for_checkpoint
from sqlalchemy import func, select
from testdata import classification_file

from service.cli.local_ray import free_service_port, wait_ready
from service.db import Database, Job, Model

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 240
JOB_TIMEOUT_S = 420


def _ours(pgid: int | None, marker: bytes) -> list[int]:
    """Live (not zombie) processes the service started: those of its process group, and
    those that left it but carry `marker` in their environment (Ray Jobs starts each job's
    driver in a session of its own), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if state != "Z" and (int(group) == pgid or marker in environ):
            pids.append(int(entry.name))
    return pids


def _describe(pid: int) -> str:
    """A leftover process, for the failure message: its name, group and open files."""
    proc = Path(f"/proc/{pid}")
    try:
        name = (proc / "comm").read_text().strip()
        group = (proc / "stat").read_text().rsplit(")", 1)[1].split()[2]
        files = sorted({os.readlink(fd) for fd in (proc / "fd").iterdir()})
    except OSError as exc:
        return f"{pid}: {exc}"
    return f"{pid} {name} pgid={group} files={[f for f in files if '/' in f][:6]}"


def _listener(port: int) -> tuple[str, str]:
    """Who listens on `port` and where: (the process's title, its address), from /proc."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state, inode = (line.split()[i] for i in (1, 3, 9))
            if state == "0A" and int(local.split(":")[1], 16) == port:  # LISTEN
                found[inode] = local.split(":")[0]
    assert len(found) == 1, f"{len(found)} listening sockets on port {port}"
    ((inode, hex_addr),) = found.items()

    def holds(proc: Path) -> bool:
        for fd in proc.glob("fd/*"):
            with contextlib.suppress(OSError):  # an fd may close while we look
                if os.readlink(fd) == f"socket:[{inode}]":
                    return True
        return False

    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # a process may end while we look
            if proc.name.isdigit() and holds(proc):
                title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                # /proc writes the IPv4 address's 32-bit word in host (little-endian) order
                return title, ".".join(str(b) for b in bytes.fromhex(hex_addr)[::-1])
    raise AssertionError(f"no process holds the socket listening on {port}")


class Service:
    """`tuneserve run` in a process group of its own, so that everything it starts can be
    found, and stopped, by that group."""

    def __init__(self, home: Path, port: int, tmp: Path, database_url: str):
        self.home, self.port, self.tmp, self.database_url = home, port, tmp, database_url
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "service.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
        env.update(
            TMPDIR=str(self.tmp),  # its Ray's temp dir goes here (short: under /tmp)
            TUNESERVE_MODEL_REPLICA_CPUS="0.25",
            TUNESERVE_JOBS_POLL_S="0.5",
            TUNESERVE_JOB_CPUS_PER_WORKER="1",
            TUNESERVE_DATABASE_URL=self.database_url,
        )
        tuneserve = Path(sys.executable).with_name("tuneserve")
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [str(tuneserve), "run", "--home", str(self.home), "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # its record is written once it has reaped what a killed run left; until then the
        # old run's ingress replica may still answer on the port
        record = self.home / ".local-ray" / str(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not record.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            wait_ready(self.url, timeout_s=START_TIMEOUT_S)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    def kill(self) -> Path:
        """SIGKILL the service's process alone, as the OOM killer would; return its Ray temp
        dir, what it recorded under its home for the next start to clean up."""
        assert self.proc is not None
        (record,) = (self.home / ".local-ray").iterdir()
        self.proc.kill()
        self.proc.wait(timeout=30)
        return Path(record.read_text())

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; then whatever of its group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._reap(grace_s=10)

    def _reap(self, grace_s: float) -> None:
        assert self.proc is not None
        pgid = self.proc.pid
        deadline = time.monotonic() + grace_s
        marker = f"TMPDIR={self.tmp}".encode()
        while _ours(pgid, marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _ours(pgid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        left = _ours(pgid, marker)
        assert not left, f"the service's processes remain: {left}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


# PostgreSQL here trusts 127.0.0.1 and ignores it; it stands for the password a real
# deployment's URL holds, which the service must neither log nor pass in deployment args
PASSWORD = "pw-not-for-the-logs"


@pytest.fixture
def service(store, pg_admin):
    tmp = Path(tempfile.mkdtemp(prefix="tskill-", dir="/tmp"))
    home = tmp / "home"
    shutil.copytree(store / "models" / "base", home / "models" / "base")
    with fresh_pg_database(pg_admin) as url:
        url = url.replace("postgres@", f"postgres:{PASSWORD}@")
        svc = Service(home, free_service_port(), tmp, url)
        yield svc
        svc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_the_service_killed_by_pid_is_restarted_and_the_job_finishes_once(service, tmp_path):
    service.start()
    # direct ingress: the ingress replica itself answers on the service's port, on loopback,
    # with no proxy actor in the path
    title, address = _listener(service.port)
    # (Ray may add the method it runs to the title)
    assert title.startswith("ray::ServeReplica:tuneserve:ingress") and address == "127.0.0.1"
    assert "Proxy" not in title
    http = httpx.Client(base_url=service.url, timeout=60)
    data = classification_file(tmp_path / "sentiment.jsonl", rows=400)
    with data.open("rb") as f:
        uploaded = http.post(
            "/v1/files", files={"file": (data.name, f)}, data={"purpose": "fine-tune"}
        ).json()
    job = http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "base",
            "training_file": uploaded["id"],
            "hyperparameters": {
                "n_epochs": 4,
                "batch_size": 2,
                "learning_rate_multiplier": 20,
                "warmup_ratio": 0.0,
                "log_every_steps": 20,
                "early_stopping_patience": None,
                "cv_folds": 0,
            },
            "training_method": "full",
        },
    ).json()
    first = wait_for_checkpoint(http, job["id"])
    time.sleep(3)  # Ray Train registers the checkpoint at its controller's next poll
    first_pid = service.proc.pid
    first_ray = service.kill()  # the service, its Ray, the Ray Job and the training worker

    db = Database(service.database_url)
    with db.session() as s:
        assert s.scalar(select(Job.status).where(Job.id == job["id"])) == "running"

    # what outlives a SIGKILL (Ray's agents, the Ray Job's driver waiting for its cluster,
    # Ray's temp dir) is left for the next start on the same home to stop and delete
    assert _ours(first_pid, f"RAY_TMPDIR={first_ray}".encode()) and first_ray.is_dir()
    service.start()
    left = _ours(first_pid, f"RAY_TMPDIR={first_ray}".encode())
    assert not left, [_describe(pid) for pid in left]
    assert not first_ray.exists()
    assert "processes a killed run left behind" in service.log.read_text(errors="replace")
    assert [p.name for p in (service.home / ".local-ray").iterdir()] == [str(service.proc.pid)]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (done := http.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"job still {done['status']}\n{service.log_tail()}"
        time.sleep(0.5)
    assert done["status"] == "succeeded", (done["error"], service.log_tail())
    assert done["attempt"] == 2  # submitted again by the new service's job runner

    events = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=1000").json()["data"]
    messages = [e["message"] for e in events]
    assert sum(m.startswith("Ray no longer knew the job's run") for m in messages) == 1
    assert resumed_step(messages) >= first["step_number"], (messages, first)
    assert sum(m.startswith("The job succeeded") for m in messages) == 1
    assert sum(m.startswith("Training started") for m in messages) == 1
    steps = [
        e["data"]["step"] for e in events if e["type"] == "metrics" and "total_steps" in e["data"]
    ]
    assert len(steps) == len(set(steps))
    with db.session() as s:
        count = s.scalar(
            select(func.count()).select_from(Model).where(Model.id == done["fine_tuned_model"])
        )
    assert count == 1
    db.dispose()
    r = http.post("/v1/classify", json={"model": done["fine_tuned_model"], "inputs": ["wonderful"]})
    assert r.status_code == 200, r.text
    # nothing either service or its Ray wrote (logs, Serve's state) holds the password
    leaks = [p for p in service.tmp.rglob("*") if p.is_file() and PASSWORD.encode() in _bytes(p)]
    assert not leaks, leaks


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # a socket, or a file gone meanwhile
        return b""
