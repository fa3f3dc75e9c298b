"""What a killed `tuneserve run` left behind, found and stopped by the next one on its home.

`tuneserve run` starts a local Ray whose processes outlive a SIGKILL of it: Ray's dashboard
and runtime-env agents stay, a Ray Job's driver waits about a minute for its cluster to come
back, the ingress replica may still hold the service's port, and Ray's temp dir (its logs)
stays on disk. Ray reaps none of this (`ray stop` would stop every Ray on the machine, other
users' too), so each run records its Ray temp dir under the home, and the next run stops the
processes of a dead run and deletes its dir. A process is the run's when it holds a file open
under that dir (every Ray process writes its logs there) or carries it as RAY_TMPDIR in its
environment; the environment alone does not do: Ray's processes overwrite it with their
process title.

Written by hand: what identifies one run's processes is its temp dir, which no process
library knows about; /proc is read directly (Linux only, as Ray on one machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

RUNS_DIR = ".local-ray"  # under the home: one file a live run, named by its PID
TMP_PREFIX = "tsray-"  # what local_ray_env names a run's Ray temp dir


def record(home: Path, ray_tmp: str) -> Path:
    """Note this process's Ray temp dir under `home`; `forget` it on a clean exit."""
    runs = home / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / str(os.getpid())
    path.write_text(ray_tmp)
    return path


def forget(path: Path) -> None:
    path.unlink(missing_ok=True)


def reap(home: Path, grace_s: float = 5.0) -> list[int]:
    """Stop what runs recorded under `home` left when they died; return the PIDs stopped.

    A record whose process still runs is another live service's: left alone (a process's
    own /proc environ is the one it started with, so the PID is all there is to check; a
    PID reused by another process only delays the reaping to a later start)."""
    stopped: list[int] = []
    runs = home / RUNS_DIR
    for path in sorted(runs.glob("*")) if runs.is_dir() else []:
        ray_tmp = path.read_text().strip()
        if not path.name.isdigit() or not Path(ray_tmp).name.startswith(TMP_PREFIX):
            continue  # not a record of ours: never delete a path we did not make
        if int(path.name) != os.getpid() and _alive(int(path.name)):
            continue
        left = _of_run(ray_tmp)
        _stop(left, grace_s)
        stopped += left
        shutil.rmtree(ray_tmp, ignore_errors=True)
        path.unlink(missing_ok=True)
    return stopped


def _stop(pids: list[int], grace_s: float) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while (pids := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids:
            return


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _holds(pid: int, ray_tmp: str) -> bool:
    """Whether the process carries `ray_tmp` as RAY_TMPDIR or holds a file open under it."""
    proc = Path(f"/proc/{pid}")
    try:
        if f"RAY_TMPDIR={ray_tmp}".encode() in (proc / "environ").read_bytes().split(b"\0"):
            return True
        fds = list((proc / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(ray_tmp + "/"):
                return True
    return False


def _of_run(ray_tmp: str) -> list[int]:
    """Live processes (ours to see: the same user) of the run whose Ray temp dir this is."""
    me = os.getpid()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != me
        and _holds(int(entry.name), ray_tmp)
        and _alive(int(entry.name))
    ]
