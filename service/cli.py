"""`tuneserve`: the command line.

    tuneserve run            start a local Ray on 127.0.0.1 and serve the API (Ctrl-C stops it)
    tuneserve import-base    import the bundled encoder (or an HF folder) as a base model
    tuneserve models         list the models in the store

Heavy imports (ray, torch) happen inside the commands, so `tuneserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.settings import Settings

EXAMPLE_CURL = """curl -s {url}/v1/classify -H 'content-type: application/json' \\
  -d '{{"model": "base", "inputs": ["I loved this film, it was wonderful"], "labels": ["positive", "negative"]}}'"""


def local_ray_env(tmp_root: str | None = None) -> str:
    """Environment for a local Ray that stays on loopback; returns the per-run temp dir.

    Must run before `ray` is imported: Ray reads these at import time.
    """
    # With this off, Ray takes the loopback address as the node address and binds there.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's socket paths must stay short (108 bytes): a short temp dir of our own per run.
    tmp = tempfile.mkdtemp(prefix="tsray-", dir=tmp_root or "/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    return tmp


def start_ray(settings: Settings) -> None:
    import ray

    if settings.ray_address:
        ray.init(address=settings.ray_address)
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
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


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {
        k: v for k, v in {"home": args.home, "host": args.host, "port": args.port}.items() if v
    }
    settings = Settings(**overrides)
    ray_tmp = local_ray_env() if not settings.ray_address else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _import_base(settings)
        print(f"starting Ray ({settings.ray_address or 'local, 127.0.0.1'}) ...", flush=True)
        start_ray(settings)
        from service.main import deploy

        deploy(settings)
        url = f"http://{settings.host}:{settings.port}"
        wait_ready(url)
        print(f"\ntuneserve is serving at {url}  (API docs: {url}/docs)\n")
        print("try:\n" + EXAMPLE_CURL.format(url=url) + "\n")
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(1.0):
            pass
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _shutdown()
        if ray_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)


def _shutdown() -> None:
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _import_base(settings: Settings) -> None:
    from training import artifacts

    if (artifacts.model_dir(settings.home, settings.base_model) / artifacts.MANIFEST).is_file():
        print(f"model store: {settings.home} (base model present)", flush=True)
        return
    print(
        f"importing the bundled encoder into {settings.home} as {settings.base_model!r} "
        "(once; about 20 s) ...",
        flush=True,
    )
    from training.encoders import ensure_base

    manifest, _ = ensure_base(settings.home, settings.base_model)
    assert manifest.parity is not None
    print(
        f"  exported fp32 + int8 ONNX; serving {manifest.precision}; int8 cosine to PyTorch "
        f"{manifest.parity.mean_cosine.get('int8', float('nan')):.4f}",
        flush=True,
    )


def cmd_import_base(args: argparse.Namespace) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    from training.encoders import ensure_base

    manifest, imported = ensure_base(settings.home, args.id or settings.base_model, args.source)
    where = settings.home
    print(
        f"{'imported' if imported else 'already present:'} {manifest.id} in {where} "
        f"(serving {manifest.precision})"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    from service.registry import Registry

    rows = Registry(settings.home, settings.base_model).list()
    if not rows:
        print(f"no models in {settings.home}; `tuneserve import-base` adds the base encoder")
    for m in rows:
        print(f"{m.id:40} {m.task:20} {m.precision:5} {m.created_at:%Y-%m-%d %H:%M}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneserve", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve the API on a local Ray (or TUNESERVE_RAY_ADDRESS)")
    run.add_argument("--home", type=Path, help="model store (default ./.tuneserve)")
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default 8000)")
    run.set_defaults(func=cmd_run)

    imp = sub.add_parser("import-base", help="import an encoder into the store as a base model")
    imp.add_argument("--home", type=Path)
    imp.add_argument("--source", type=Path, help="an HF model folder (default: the bundled one)")
    imp.add_argument("--id", help="model id (default: the base model id, `base`)")
    imp.set_defaults(func=cmd_import_base)

    models = sub.add_parser("models", help="list the models in the store")
    models.add_argument("--home", type=Path)
    models.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
