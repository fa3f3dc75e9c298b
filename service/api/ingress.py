"""The Serve ingress: one replica class that wires the handles and the state the routes use,
and builds the FastAPI app in the replica (`__serve_build_asgi_app__`). No routes of its own."""

from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle

from service.api.app import create_app
from service.api.deps import Context
from service.auth import Authenticator
from service.db import Database
from service.deployments.models import ModelClient
from service.deployments.network import bind_replica_grpc_to_node_ip
from service.registry import Registry
from service.settings import Settings, replica_admin_hash, replica_db_url
from service.tenancy import Tenancy


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress:
    def __init__(
        self,
        models: DeploymentHandle,
        runner: DeploymentHandle,  # bound so that the job runner is part of the application
        settings: dict,
        admin_key_sha256: str | None,
    ):
        bind_replica_grpc_to_node_ip()
        s = Settings(**settings)
        registry = Registry(s.home, s.base_model)
        db = Database(replica_db_url(s.db_url()))
        # enough calls per model to keep every replica that may hold it busy, and one more
        # each to cover the trip
        replicas = max(s.model_replicas, s.autoscaling_max_replicas)
        self.context = Context(
            settings=s,
            home=Path(s.home),
            db=db,
            auth=Authenticator(db, replica_admin_hash(admin_key_sha256)),
            registry=registry,
            tenancy=Tenancy(registry, db),
            models=ModelClient(
                models,
                calls_in_flight=s.model_calls_in_flight or max(2, 2 * replicas),
                batch_tokens=s.batch_tokens,
                max_queued=s.model_max_queued,
                timeout_s=s.model_call_timeout_s,
            ),
        )

    def __serve_build_asgi_app__(self):
        return create_app(self.context)
