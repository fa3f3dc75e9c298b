"""/healthz and /readyz over real HTTP: ready only once the base model has loaded."""

import shutil
import time

import httpx
from conftest import app_on_session


def _until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(0.5)
    return result


def test_readyz_is_503_until_the_base_model_loads(ray_session, service_url, store, tmp_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)  # a store without its base model, yet
    with app_on_session(
        service_url, "unready", wait=False, home=home, model_replica_cpus=0.25
    ) as url:
        _until(lambda: _get(f"{url}/healthz") == 200, 120, "/healthz")  # the ingress is alive
        r = httpx.get(f"{url}/readyz", timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "not_ready" and "base model not ready" in r.text
        shutil.copytree(store / "models" / "base", home / "models" / "base")
        _until(lambda: _get(f"{url}/readyz") == 200, 120, "/readyz once the base is there")


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=60).status_code
    except httpx.HTTPError:
        return 0
