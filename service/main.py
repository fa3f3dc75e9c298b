"""The Ray Serve application: `build_app` is the `import_path` of deploy/serve_config.yaml
(`service.main:build_app`) and what `tuneserve run` deploys."""

from __future__ import annotations

import hashlib

from ray import serve
from ray.serve import Application

from service.api.ingress import Ingress
from service.deployments.jobs import JobRunnerServer
from service.deployments.models import ModelServer
from service.settings import Settings

# a resource only Ray's head node has (Ray's own singletons are placed with it)
HEAD_NODE = "node:__internal_head__"


def _scaling(settings: Settings) -> dict:
    """A fixed number of model replicas, or autoscaling from it up to the maximum."""
    if settings.autoscaling_max_replicas > settings.model_replicas:
        return {
            "autoscaling_config": {
                "min_replicas": settings.model_replicas,
                "max_replicas": settings.autoscaling_max_replicas,
                "target_ongoing_requests": settings.autoscaling_target_ongoing,
            }
        }
    return {"num_replicas": settings.model_replicas}


def build_app(args: dict | None = None) -> Application:
    """Build the application from `args` (serve_config.yaml's `args`); a TUNESERVE_*
    variable overrides the arg of its name (Settings.from_args)."""
    settings = Settings.from_args(args or {})
    models = ModelServer.options(  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment
        **_scaling(settings),
        ray_actor_options={
            "num_cpus": settings.model_replica_cpus,
            "num_gpus": settings.model_replica_gpus,
        },
        max_ongoing_requests=settings.model_max_ongoing,
        max_queued_requests=settings.model_max_queued,
    ).bind(
        str(settings.home),
        settings.base_model,
        threads=settings.ort_threads,
        tokenizer_threads=settings.tokenizer_threads,
        max_models=settings.max_models_per_replica,
        max_heads=settings.max_heads_per_replica,
        max_head_bytes=settings.max_head_mib_per_replica << 20,
        max_batch_tokens=settings.max_batch_tokens,
        batch_tokens=settings.batch_tokens,
        batch_wait_s=settings.batch_wait_s,
        device=settings.device,
        precision_budget=settings.precision_budget,
        min_encoder_cosine=settings.min_encoder_cosine,
    )
    # The ingress and the job runner hold no CPUs and live on the head node: the one Ray
    # node that is always there (on Kubernetes, worker pods come and go with autoscaling).
    on_head = {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}}
    runner = JobRunnerServer.options(ray_actor_options=on_head).bind(  # type: ignore[attr-defined]  # a Deployment
        str(settings.home),
        settings.shared_db_url(),
        poll_s=settings.jobs_poll_s,
        address=settings.jobs_address,
        limits={
            "max_running": settings.max_running_jobs,
            "min_event_interval_s": settings.min_event_interval_s,
            "max_follow_errors": settings.max_follow_errors,
            "sweep_after_s": settings.sweep_after_s,
        },
    )
    key = settings.admin_key
    return Ingress.options(  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment
        ray_actor_options=on_head,
        max_ongoing_requests=settings.ingress_max_ongoing,
        max_queued_requests=settings.ingress_max_queued,
    ).bind(
        models,
        runner,
        ingress_settings(settings),
        hashlib.sha256(key.encode()).hexdigest() if key else None,
    )


def ingress_settings(settings: Settings) -> dict:
    """The settings the ingress is given, whole, but without a secret: Serve's controller
    keeps deployment arguments (in Ray's GCS, shown by its dashboard), so the admin key is
    left out (the ingress gets its SHA-256) and the database password masked (each replica
    reads it from its own environment, settings.replica_db_url)."""
    return {
        **settings.app_args(),
        "admin_key": None,
        "database_url": settings.shared_db_url() if settings.database_url else None,
    }


def deploy(
    settings: Settings,
    *,
    name: str = "tuneserve",
    route_prefix: str = "/",
    proxy_port: int | None = None,
) -> None:
    """Start Serve on the configured address and deploy the application. Serve's HTTP proxy
    listens on the configured port, or, with direct ingress (`tuneserve run`: the ingress
    replica itself answers on that port, service/cli/local_ray.py), on `proxy_port`: Ray
    2.60 keeps a fallback proxy on the head node even then."""
    serve.start(
        http_options={
            "host": settings.host,
            "port": proxy_port or settings.port,
            # a request that hangs is answered, never held for ever
            "request_timeout_s": settings.request_timeout_s,
        },
    )
    serve.run(build_app(settings.app_args()), name=name, route_prefix=route_prefix, blocking=False)


def shutdown() -> None:
    """Stop Serve and the Ray this process joined or started."""
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
