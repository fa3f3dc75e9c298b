"""`tuneserve run`: a local Ray on 127.0.0.1 (or the cluster at TUNESERVE_RAY_ADDRESS), the
bundled encoder imported once, the API served until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from service.cli import orphans
from service.cli.local_ray import (
    direct_ingress_env,
    free_port,
    local_ray_env,
    start_ray,
    wait_port_free,
    wait_ready,
)
from service.cli.store import import_base
from service.settings import Settings

EXAMPLE_CURL = """curl -s {url}/v1/classify -H 'content-type: application/json' \\
  -d '{{"model": "base", "inputs": ["I loved this film, it was wonderful"], "labels": ["positive", "negative"]}}'"""


def serve_config_args(path: Path) -> dict:
    """The settings a Ray Serve config file gives: its one application's args and its port."""
    import yaml

    config = yaml.safe_load(path.read_text())
    apps = config.get("applications") or []
    if len(apps) != 1:
        raise SystemExit(f"{path}: expected one application, found {len(apps)}")
    args = dict(apps[0].get("args") or {})
    port = (config.get("http_options") or {}).get("port")
    if port is not None:
        args.setdefault("port", port)
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    """The config file's args, under TUNESERVE_* variables, under the flags."""
    overrides = {
        k: v for k, v in {"home": args.home, "host": args.host, "port": args.port}.items() if v
    }
    settings = Settings.from_args(serve_config_args(args.config) if args.config else {})
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    ray_tmp = local_ray_env() if not settings.ray_address else None
    record = None
    if ray_tmp:
        if stopped := orphans.reap(settings.home):
            print(f"stopped {len(stopped)} processes a killed run left behind", flush=True)
        record = orphans.record(settings.home, ray_tmp)
    direct = settings.direct_ingress and not settings.ray_address
    if direct:
        direct_ingress_env(settings.port)
        wait_port_free(settings.port)
    if settings.database_url and not settings.ray_address:
        # replicas read a database password from their own environment (replica_db_url): the
        # local Ray started here inherits this process's
        os.environ["TUNESERVE_DATABASE_URL"] = settings.database_url
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        import_base(settings)
        print(f"starting Ray ({settings.ray_address or 'local, 127.0.0.1'}) ...", flush=True)
        start_ray(settings.ray_address)
        from service.main import deploy

        deploy(settings, proxy_port=free_port() if direct else None)
        url = f"http://{settings.host}:{settings.port}"
        wait_ready(url)
        _banner(settings, url)
        while not stop.wait(1.0):
            pass
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if "ray" in sys.modules:
            from service.main import shutdown

            shutdown()
        if ray_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        if record:
            orphans.forget(record)


def _banner(settings: Settings, url: str) -> None:
    print(f"\ntuneserve is serving at {url}  (API docs: {url}/docs)\n")
    print("try:\n" + EXAMPLE_CURL.format(url=url) + "\n")
    if settings.admin_key:
        print("auth: on. Every /v1/ call needs an API key; make one with the admin key:")
        print(
            f"  curl -s {url}/v1/admin/keys -H 'Authorization: Bearer <admin key>' "
            "-H 'content-type: application/json' -d '{\"tenant\": \"acme\"}'\n"
        )
    else:
        print(
            f"auth: OPEN (no TUNESERVE_ADMIN_KEY): anyone who reaches {settings.host}:"
            f"{settings.port} may call every endpoint, unless API keys exist in the "
            "database. Set TUNESERVE_ADMIN_KEY to require keys.\n"
        )
    where = f"at {settings.home / 'tuneserve.db'}" if not settings.database_url else ""
    print(
        f"jobs: {settings.db_url().split('://')[0]} database {where}; "
        "fine-tune with `tuneserve jobs create --training-file FILE --follow`\n"
    )
    print("Ctrl-C stops it.", flush=True)


def add_commands(sub) -> None:
    run = sub.add_parser("run", help="serve the API on a local Ray (or TUNESERVE_RAY_ADDRESS)")
    run.add_argument("--home", type=Path, help="model store (default ./.tuneserve)")
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default: the config's, else 8000)")
    run.add_argument(
        "--config",
        type=Path,
        help="a Ray Serve config (deploy/serve_config.yaml): its application args are the "
        "defaults, under TUNESERVE_* variables and these flags",
    )
    run.set_defaults(func=cmd_run)
