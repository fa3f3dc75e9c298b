"""A local Ray that stays on loopback, for `tuneserve run`, local training and the tests.

Nothing here imports Ray at module level: Ray reads its environment when it is imported, so
`local_ray_env` must run first.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Ray Serve's per-request path, trimmed (each is one of the switches of Ray's
# RAY_SERVE_THROUGHPUT_OPTIMIZED, without its direct ingress): handle calls over gRPC, the
# router and the replica's methods on the replica's own event loop (ours never block it:
# inference and database work run in threads), request logs written in batches. Measured on
# 2 cores, concurrency 32: 157 requests/s with them, 114 without (bench/serve.py). The
# Kubernetes ConfigMap sets the same (deploy/k8s/base/kustomization.yaml).
SERVE_FAST_PATH = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    # over gRPC a request or response is one message, and gRPC's default cap is 4 MiB: room
    # for an upload or a download at TUNESERVE_MAX_UPLOAD_BYTES (512 MiB) and its envelope
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(2**30),
}
# Direct ingress (`tuneserve run` on one machine): the ingress replica answers HTTP on the
# service's port itself, with no proxy actor in between (service.main.deploy); the drain a
# replica waits for before stopping is for a load balancer to notice, which one machine lacks.
# Serve also keeps a stopped replica's port out of use for 150 s (RAY_SERVE_PORT_QUARANTINE_S,
# so that an HAProxy worker still draining cannot route to whoever takes it next): with no
# HAProxy and a range of one port, that only stops a restarted ingress replica from serving.
DIRECT_INGRESS = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    "RAY_SERVE_PORT_QUARANTINE_S": "0",
}
DASHBOARD_PORT = 8265
RAY_AGENT_PORT = 52365  # Ray's fixed dashboard-agent port


def local_ray_env(tmp_root: str | None = None) -> str:
    """Environment for a local Ray that stays on loopback; returns the per-run temp dir.

    Must run before `ray` is imported: Ray reads these at import time.
    """
    # With this off, Ray takes the loopback address as the node address and binds there.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name, value in SERVE_FAST_PATH.items():
        os.environ.setdefault(name, value)
    # Ray's socket paths must stay short (108 bytes): a short temp dir of our own per run,
    # under TMPDIR where that is short too, else under /tmp
    if tmp_root is None:
        tmp_root = tempfile.gettempdir()
        if len(tmp_root) > 32:
            tmp_root = "/tmp"
    tmp = tempfile.mkdtemp(prefix="tsray-", dir=tmp_root)
    os.environ["RAY_TMPDIR"] = tmp
    return tmp


def direct_ingress_env(port: int) -> None:
    """Before Ray starts: the one ingress replica takes `port` for HTTP (Serve allocates a
    replica's port from a range; here the range is that one port)."""
    os.environ.update(DIRECT_INGRESS)
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(port)
    os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(port + 1)


def wait_port_free(port: int, timeout_s: float = 120.0) -> None:
    """Wait until nothing listens on `port` (127.0.0.1). Under direct ingress the replica
    must get that one port, and Serve gives up on a port it once found taken; a service
    killed by SIGKILL leaves its replicas to exit for a while."""
    deadline = time.monotonic() + timeout_s
    while not _port_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"port {port} is in use (another service, or the replicas of one that was "
                f"killed and have not exited after {timeout_s:.0f} s); stop it or pick --port"
            )
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_service_port() -> int:
    """A free port for a service to listen on, below the kernel's ephemeral range.

    `free_port` answers from the ephemeral range, which every outgoing connection draws its
    local port from, and Ray opens many: between our check and the ingress replica's bind,
    one of them can take the port, and Serve then blocks it for good (its range is that
    one port), so the service never comes up. Ports under the ephemeral range and above
    Ray's worker ports (10002-19999) are taken only by listeners.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        if _port_free(port):
            return port
    return free_port()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def init_local_ray(**kwargs) -> None:
    """Start a local Ray on loopback with its dashboard (which hosts Ray Jobs).

    Ray gives the dashboard agent a fixed port (52365) and `ray.init` has no option to change
    it, so a second Ray on the machine would start without a working agent and refuse every
    job. Here the agent gets a free port instead (by hand: Ray has no setting for it).
    """
    import ray
    from ray._private import parameter

    if not getattr(parameter.RayParams.__init__, "_tuneserve", False):
        original = parameter.RayParams.__init__

        def init(self, *args, **kw):
            if kw.get("dashboard_agent_listen_port") in (None, RAY_AGENT_PORT):
                kw["dashboard_agent_listen_port"] = free_port()
            original(self, *args, **kw)

        init._tuneserve = True  # type: ignore[attr-defined]  # a marker on a function
        parameter.RayParams.__init__ = init  # type: ignore[method-assign]  # see the docstring
    if "dashboard_port" not in kwargs:  # Ray's usual port, unless another Ray holds it
        kwargs["dashboard_port"] = DASHBOARD_PORT if _port_free(DASHBOARD_PORT) else free_port()
    ray.init(
        include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", **kwargs
    )


def start_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a local one."""
    import ray

    if address:
        ray.init(address=address)
    else:
        init_local_ray()


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    """Wait for the service at `url` to answer /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=35) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"the service at {url} was not ready after {timeout_s:.0f}s ({last})")
