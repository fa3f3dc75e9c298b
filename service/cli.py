"""`tuneserve`: the command line.

    tuneserve run            start a local Ray on 127.0.0.1 and serve the API (Ctrl-C stops it)
    tuneserve import-base    import the bundled encoder (or an HF folder) as a base model
    tuneserve finetune       fine-tune a model (text-classification, extractive-qa)
    tuneserve pretrain       masked-LM pretraining (continued, or from scratch)
    tuneserve export RUN     export the best checkpoint of a run again
    tuneserve models         list the models in the store

Heavy imports (ray, torch) happen inside the commands, so `tuneserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from service import client
from service.settings import Settings

EXAMPLE_CURL = """curl -s {url}/v1/classify -H 'content-type: application/json' \\
  -d '{{"model": "base", "inputs": ["I loved this film, it was wonderful"], "labels": ["positive", "negative"]}}'"""


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DASHBOARD_PORT = 8265


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
    job. Here the agent gets a free port instead.
    """
    import ray
    from ray._private import parameter

    if not getattr(parameter.RayParams.__init__, "_tuneserve", False):
        original = parameter.RayParams.__init__

        def init(self, *args, **kw):
            if kw.get("dashboard_agent_listen_port") in (None, 52365):
                kw["dashboard_agent_listen_port"] = free_port()
            original(self, *args, **kw)

        init._tuneserve = True  # type: ignore[attr-defined]
        parameter.RayParams.__init__ = init  # type: ignore[method-assign]
    if "dashboard_port" not in kwargs:  # Ray's usual port, unless another Ray holds it
        kwargs["dashboard_port"] = DASHBOARD_PORT if _port_free(DASHBOARD_PORT) else free_port()
    ray.init(
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        **kwargs,
    )


def start_ray(settings: Settings) -> None:
    import ray

    if settings.ray_address:
        ray.init(address=settings.ray_address)
    else:
        init_local_ray()


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


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {
        k: v for k, v in {"home": args.home, "host": args.host, "port": args.port}.items() if v
    }
    defaults = serve_config_args(args.config) if args.config else {}
    settings = Settings.from_args(defaults)
    if overrides:  # flags win over the environment too
        settings = Settings(**{**settings.model_dump(), **overrides})
    ray_tmp = local_ray_env() if not settings.ray_address else None
    if settings.database_url and not settings.ray_address:
        # replicas read a database password from their own environment (replica_db_url): the
        # local Ray started here inherits this process's
        os.environ["TUNESERVE_DATABASE_URL"] = settings.database_url
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
        print(
            f"jobs: {settings.db_url().split('://')[0]} database "
            f"{'at ' + str(settings.home / 'tuneserve.db') if not settings.database_url else ''}; "
            f"fine-tune with `tuneserve jobs create --training-file FILE --follow`\n"
        )
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


def _default_cpus_per_worker(args: argparse.Namespace) -> float:
    """On CPU, the workers share this machine's cores (a worker's torch uses as many threads as
    it has CPUs); on GPU one CPU a worker feeds its GPU."""
    if args.gpu:
        return 1.0
    return max(1.0, (os.cpu_count() or 1) // args.workers)


def _spec_from_args(args: argparse.Namespace, task: str) -> dict:
    hp = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "max_seq_length": args.max_length,
            "doc_stride": getattr(args, "doc_stride", None),
            "max_steps": args.max_steps,
            "seed": args.seed,
            "log_every_steps": args.log_every,
        }.items()
        if v is not None
    }
    spec = {
        "run_id": args.run_id or f"{task}-{time.strftime('%Y%m%d-%H%M%S')}",
        "task": task,
        "base_model": args.base,
        "train_file": str(Path(args.train).resolve()),
        "hyperparameters": hp,
        "scaling": {
            "num_workers": args.workers,
            "use_gpu": args.gpu,
            "cpus_per_worker": args.cpus_per_worker or _default_cpus_per_worker(args),
            **({"mixed_precision": args.mixed_precision} if args.mixed_precision else {}),
        },
    }
    if args.validation:
        spec["validation_file"] = str(Path(args.validation).resolve())
    if args.model_id:
        spec["output_model_id"] = args.model_id
    for name in ("objective", "scratch_size", "vocab_size"):
        if getattr(args, name, None) is not None:
            spec[name] = getattr(args, name)
    return spec


def _bar(done: int, total: int, width: int = 28) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def run_training(spec: dict, home: Path, *, replace_model: bool = False) -> int:
    """Run `python -m training` on the spec (as a Ray Job does) and show its progress."""
    import json
    import subprocess

    runs = home / "runs" / spec["run_id"]
    runs.mkdir(parents=True, exist_ok=True)
    spec_path = runs / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    ray_tmp = local_ray_env()
    cmd = [sys.executable, "-m", "training", str(spec_path), "--home", str(home)]
    if replace_model:
        cmd.append("--replace-model")
    print(
        f"run {spec['run_id']}: {spec['task']} from {spec['base_model']} (logs: {runs / 'train.log'})"
    )
    # Ray may print a worker's line twice in the driver's output: show each step once
    last_step, last_eval, result, in_error = 0, -1, None, False
    try:
        with (
            (runs / "train.log").open("a") as log,
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=os.environ.copy(),
            ) as proc,
        ):
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                at = line.find('{"tuneserve_event"')
                if at < 0:
                    # a refused spec or data file: its message and the problem lines under it
                    in_error = line.startswith(("invalid spec", "invalid data")) or (
                        in_error and line.startswith("  ")
                    )
                    if in_error:
                        print(line.rstrip(), file=sys.stderr)
                    continue
                event = json.loads(line[at:])["tuneserve_event"]
                kind = event.get("type")
                if kind == "progress" and event["step"] > last_step:
                    last_step = event["step"]
                    eta = event.get("eta_s")
                    print(
                        f"\r{_bar(event['step'], event['total_steps'])} step {event['step']}/"
                        f"{event['total_steps']} loss {event['loss']:.4f} "
                        f"{event['samples_per_s']:.1f} samples/s"
                        f"{f' eta {eta:.0f}s' if eta is not None else ''}   ",
                        end="",
                        flush=True,
                    )
                elif kind == "metrics" and event["step"] > last_eval:
                    last_eval = event["step"]
                    shown = {
                        k: round(v, 4)
                        for k, v in event.items()
                        if k
                        not in (
                            "type",
                            "step",
                            "epoch",
                            "resumed_from_step",
                            "workers",
                            "train_samples_per_s",
                        )
                    }
                    print(f"\n  eval at step {event['step']}: {shown}", flush=True)
                elif kind == "result":
                    result = event
                elif kind == "message":
                    print(f"  {event['message']}", flush=True)
        if proc.returncode:
            print(
                f"\nrun {spec['run_id']} failed (exit {proc.returncode}); see {runs / 'train.log'}",
                file=sys.stderr,
            )
            return proc.returncode
        if result and result.get("model"):
            print(
                f"\nmodel {result['model']} is in the store (serving {result.get('precision')}); "
                "a running service serves it on the next request"
            )
        return 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _train_from_args(args: argparse.Namespace, task: str) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    spec = _spec_from_args(args, task)
    if spec["base_model"] == settings.base_model:
        _import_base(settings)  # a fresh store: the bundled encoder is the default base
    return run_training(spec, settings.home)


def cmd_finetune(args: argparse.Namespace) -> int:
    return _train_from_args(args, args.task)


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _train_from_args(args, "masked-lm")


def cmd_export(args: argparse.Namespace) -> int:
    """Export (again) the best checkpoint of a finished run: reruns its spec, which resumes at
    its end and trains nothing."""
    import json

    settings = Settings(**({"home": args.home} if args.home else {}))
    spec_path = settings.home / "runs" / args.run_id / "spec.json"
    if not spec_path.is_file():
        print(f"no run {args.run_id!r} under {settings.home / 'runs'}", file=sys.stderr)
        return 2
    spec = {**json.loads(spec_path.read_text()), "export": True}
    return run_training(spec, settings.home, replace_model=True)


def _training_args(p: argparse.ArgumentParser, *, base_default: str = "base") -> None:
    p.add_argument("--train", required=True, help="training data file")
    p.add_argument("--validation", help="validation file (default: 10%% of --train held out)")
    p.add_argument(
        "--base", default=base_default, help=f"model to start from (default {base_default})"
    )
    p.add_argument("--run-id", help="name of the run; rerunning a name resumes it")
    p.add_argument("--model-id", help="id of the exported model (default: the run id)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--max-length", type=int, help="max sequence length in tokens")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int, help="log every N steps")
    p.add_argument("--workers", type=int, default=1, help="data-parallel workers")
    p.add_argument("--cpus-per-worker", type=float, help="default: this machine's cores / workers")
    p.add_argument("--gpu", action="store_true", help="train on GPUs (one per worker)")
    p.add_argument("--mixed-precision", choices=["bf16", "fp16"], help="GPU only")
    p.add_argument("--home", type=Path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneserve", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

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

    imp = sub.add_parser("import-base", help="import an encoder into the store as a base model")
    imp.add_argument("--home", type=Path)
    imp.add_argument("--source", type=Path, help="an HF model folder (default: the bundled one)")
    imp.add_argument("--id", help="model id (default: the base model id, `base`)")
    imp.set_defaults(func=cmd_import_base)

    ft = sub.add_parser("finetune", help="fine-tune a model for classification or QA")
    ft.add_argument("--task", required=True, choices=["text-classification", "extractive-qa"])
    ft.add_argument("--doc-stride", type=int, help="QA: tokens shared by adjacent windows")
    _training_args(ft)
    ft.set_defaults(func=cmd_finetune)

    pt = sub.add_parser("pretrain", help="masked-LM pretraining, from an encoder or from scratch")
    pt.add_argument("--objective", choices=["mlm", "mlm+nsp"])
    pt.add_argument("--scratch-size", choices=["tiny", "mini", "small", "medium", "base"])
    pt.add_argument("--vocab-size", type=int, help="scratch: WordPiece vocabulary size")
    _training_args(pt)
    pt.set_defaults(func=cmd_pretrain)

    ex = sub.add_parser("export", help="export the best checkpoint of a run again")
    ex.add_argument("run_id")
    ex.add_argument("--home", type=Path)
    ex.set_defaults(func=cmd_export)

    models = sub.add_parser("models", help="list the models in the store")
    models.add_argument("--home", type=Path)
    models.set_defaults(func=cmd_models)

    client.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except client.ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
