"""cli/orphans.py: what a killed run left is stopped by the next start, and nothing else is.
(The whole path, a real `tuneserve run` killed mid-job, is tests/e2e/test_service_killed.py.)"""

import os
import subprocess
import sys
import time

from service.cli import orphans

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _sleeper(ray_tmp) -> subprocess.Popen:
    return subprocess.Popen(SLEEPER, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})


def _logger(log) -> subprocess.Popen:
    """A process known only by a log it holds open (Ray's overwrite their environment)."""
    code = "import sys, time; f = open(sys.argv[1], 'a'); time.sleep(120)"
    env = {k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"}
    return subprocess.Popen([sys.executable, "-c", code, str(log)], env=env)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_runs_processes_and_temp_dir_are_reaped(tmp_path):
    home, dead_tmp, live_tmp = tmp_path / "home", tmp_path / "tsray-dead", tmp_path / "tsray-live"
    dead_tmp.mkdir(), live_tmp.mkdir()
    (dead_tmp / "session.log").write_text("logs")
    left, other = _sleeper(dead_tmp), _sleeper(live_tmp)
    logging = _logger(dead_tmp / "session.log")
    runs = home / orphans.RUNS_DIR
    runs.mkdir(parents=True)
    (runs / str(_dead_pid())).write_text(str(dead_tmp))
    (runs / str(other.pid)).write_text(str(live_tmp))  # a live service's record
    (runs / "1234567").write_text("/etc")  # not a temp dir of ours: never deleted
    try:
        time.sleep(1)  # the logger has opened its log
        assert sorted(orphans.reap(home, grace_s=10)) == sorted([left.pid, logging.pid])
        assert left.wait(timeout=10) is not None and logging.wait(timeout=10) is not None
        assert not dead_tmp.exists()
        assert other.poll() is None and live_tmp.is_dir()
        assert sorted(p.name for p in runs.iterdir()) == sorted([str(other.pid), "1234567"])
    finally:
        for proc in (left, other, logging):
            proc.kill()
            proc.wait()


def test_a_clean_run_records_and_forgets_itself(tmp_path):
    home, ray_tmp = tmp_path / "home", tmp_path / "tsray-x"
    record = orphans.record(home, str(ray_tmp))
    assert record.name == str(os.getpid()) and record.read_text() == str(ray_tmp)
    orphans.forget(record)
    assert not record.exists()


def test_a_record_under_this_processs_own_pid_is_a_previous_runs(tmp_path):
    """In a restarted container the service is PID 1 again: the record under its PID is the
    last run's, not its own (which it writes after reaping)."""
    home, ray_tmp = tmp_path / "home", tmp_path / "tsray-x"
    ray_tmp.mkdir()
    record = orphans.record(home, str(ray_tmp))
    assert orphans.reap(home) == []  # nothing carries its temp dir
    assert not record.exists() and not ray_tmp.exists()
