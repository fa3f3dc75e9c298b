"""The Ray Serve application builder: `import_path: service.main:build_app` in
deploy/serve_config.yaml, and what `tuneserve run` deploys."""

from __future__ import annotations

from ray.serve import Application

from service.api import Ingress
from service.deployments import JobRunnerServer, ModelServer
from service.settings import Settings

# a resource only Ray's head node has (Ray's own singletons are placed with it)
HEAD_NODE = "node:__internal_head__"


def build_app(args: dict | None = None) -> Application:
    """Build the application from `args` (serve_config.yaml's `args`); a TUNESERVE_*
    variable overrides the arg of its name (Settings.from_args)."""
    settings = Settings.from_args(args or {})
    if settings.autoscaling_max_replicas > settings.model_replicas:
        scaling: dict = {
            "autoscaling_config": {
                "min_replicas": settings.model_replicas,
                "max_replicas": settings.autoscaling_max_replicas,
                "target_ongoing_requests": settings.autoscaling_target_ongoing,
            }
        }
    else:
        scaling = {"num_replicas": settings.model_replicas}
    models = ModelServer.options(
        **scaling,
        ray_actor_options={"num_cpus": settings.model_replica_cpus},
        max_ongoing_requests=settings.model_max_ongoing,
        max_queued_requests=settings.model_max_queued,
    ).bind(
        str(settings.home),
        settings.base_model,
        threads=settings.ort_threads,
        max_models=settings.max_models_per_replica,
        max_batch_tokens=settings.max_batch_tokens,
        batch_tokens=settings.batch_tokens,
        batch_wait_s=settings.batch_wait_s,
    )
    # The ingress and the job runner hold no CPUs and live on the head node: the one Ray
    # node that is always there (on Kubernetes, worker pods come and go with autoscaling).
    on_head = {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}}
    runner = JobRunnerServer.options(ray_actor_options=on_head).bind(
        str(settings.home),
        settings.shared_db_url(),
        max_running=settings.max_running_jobs,
        poll_s=settings.jobs_poll_s,
        address=settings.jobs_address,
    )
    return Ingress.options(
        ray_actor_options=on_head,
        max_ongoing_requests=settings.ingress_max_ongoing,
        max_queued_requests=settings.ingress_max_queued,
    ).bind(
        models,
        runner,
        str(settings.home),
        _ingress_settings(settings),
    )


def _ingress_settings(settings: Settings) -> dict:
    """What the ingress is given: the settings, with the admin key replaced by its SHA-256 and
    the database password masked (deployment arguments are kept by Serve's controller; a
    secret must not be)."""
    import hashlib

    args = settings.app_args()
    key = args.pop("admin_key", None)
    return {
        **args,
        "database_url": settings.shared_db_url() if settings.database_url else None,
        "db_url": settings.shared_db_url(),
        "admin_key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
    }


def deploy(settings: Settings, *, name: str = "tuneserve", route_prefix: str = "/") -> None:
    """Start Serve's HTTP proxy on the configured address and deploy the application."""
    from ray import serve

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings.app_args()), name=name, route_prefix=route_prefix, blocking=False)
