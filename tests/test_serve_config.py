"""deploy/serve_config.yaml is a valid Ray Serve config whose import path builds our app."""

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from service.settings import Settings

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "serve_config.yaml"


def test_serve_config_validates_against_rays_schema():
    schema = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = schema.applications
    assert app.import_path == "service.main:build_app"


def test_import_path_builds_the_application_from_the_args(tmp_path):
    app = yaml.safe_load(CONFIG.read_text())["applications"][0]
    module, attr = app["import_path"].split(":")
    build = getattr(importlib.import_module(module), attr)
    built = build({**app["args"], "home": str(tmp_path)})
    assert type(built).__name__ == "Application"
    assert set(app["args"]) <= set(Settings.model_fields)


def test_a_misspelt_arg_is_refused_not_ignored(tmp_path):
    import pytest

    from service.main import build_app

    with pytest.raises(ValueError, match=r"unknown application args \['model_replica'\]"):
        build_app({"home": str(tmp_path), "model_replica": 3})


def test_autoscaling_comes_from_the_settings(tmp_path):
    from service.main import build_app

    def model_options(app) -> dict:
        (models,) = [
            a
            for a in app._bound_deployment.init_args
            if getattr(getattr(a, "_bound_deployment", None), "name", None) == "models"
        ]
        return models._bound_deployment._deployment_config

    fixed = model_options(build_app({"home": str(tmp_path), "model_replicas": 2}))
    assert fixed.num_replicas == 2 and fixed.autoscaling_config is None
    auto = model_options(
        build_app(
            {
                "home": str(tmp_path),
                "model_replicas": 1,
                "autoscaling_max_replicas": 4,
                "autoscaling_target_ongoing": 3,
            }
        )
    )
    assert auto.autoscaling_config.min_replicas == 1 and auto.autoscaling_config.max_replicas == 4
    assert auto.autoscaling_config.target_ongoing_requests == 3


def test_an_environment_variable_overrides_the_arg_of_its_name(tmp_path, monkeypatch):
    """One serve_config.yaml for every environment: a ConfigMap tunes it through TUNESERVE_*."""
    from service.settings import Settings

    args = {"home": str(tmp_path), "model_replicas": 1, "max_running_jobs": 1}
    assert Settings.from_args(args).model_replicas == 1
    monkeypatch.setenv("TUNESERVE_MODEL_REPLICAS", "3")
    monkeypatch.setenv("TUNESERVE_JOB_USE_GPU", "true")
    settings = Settings.from_args(args)
    assert settings.model_replicas == 3 and settings.max_running_jobs == 1
    assert settings.job_use_gpu is True


def test_the_ingress_and_the_job_runner_live_on_the_head_node(tmp_path):
    from service.main import HEAD_NODE, build_app

    app = build_app({"home": str(tmp_path)})
    ingress = app._bound_deployment
    runner = next(
        a
        for a in ingress.init_args
        if getattr(getattr(a, "_bound_deployment", None), "name", "") == "jobs"
    )._bound_deployment
    models = next(
        a
        for a in ingress.init_args
        if getattr(getattr(a, "_bound_deployment", None), "name", "") == "models"
    )._bound_deployment
    for deployment in (ingress, runner):
        options = deployment.ray_actor_options
        assert options["num_cpus"] == 0 and HEAD_NODE in options["resources"]
    # model replicas go wherever there are CPUs (on Kubernetes: the CPU workers)
    assert HEAD_NODE not in (models.ray_actor_options.get("resources") or {})


def test_tuneserve_run_takes_its_defaults_from_the_serve_config(tmp_path):
    from service.cli.run import serve_config_args

    args = serve_config_args(CONFIG)
    app = yaml.safe_load(CONFIG.read_text())["applications"][0]
    assert args == {**app["args"], "port": 8000}
    assert "host" not in yaml.safe_load(CONFIG.read_text()).get("http_options", {})
    assert "--config deploy/serve_config.yaml" in (CONFIG.parents[1] / "Makefile").read_text()


PASSWORD = "pw-that-must-stay-secret"
SECRET_URL = f"postgresql+psycopg://tuneserve:{PASSWORD}@db.internal:5432/tuneserve"


def test_no_secret_travels_in_the_applications_arguments(tmp_path, monkeypatch):
    """Serve's controller keeps what an application is built with: neither the admin key nor
    the database password may be in it (the replicas read them from their environment)."""
    import ray.cloudpickle as cloudpickle

    from service.main import build_app

    monkeypatch.setenv("TUNESERVE_DATABASE_URL", SECRET_URL)
    monkeypatch.setenv("TUNESERVE_ADMIN_KEY", "ts-admin-key-that-must-stay-secret")
    pickled = cloudpickle.dumps(build_app({"home": str(tmp_path)}))
    assert PASSWORD.encode() not in pickled
    assert b"ts-admin-key-that-must-stay-secret" not in pickled
    assert b"@db.internal:5432/tuneserve" in pickled  # the URL is there, without its password


def test_a_replica_takes_the_database_password_from_its_environment(monkeypatch):
    import pytest

    from service.settings import Settings, replica_db_url

    shared = Settings(database_url=SECRET_URL).shared_db_url()
    assert PASSWORD not in shared and PASSWORD not in repr(Settings(database_url=SECRET_URL))
    monkeypatch.setenv("TUNESERVE_DATABASE_URL", SECRET_URL)
    assert replica_db_url(shared) == SECRET_URL
    # a URL without a password is passed as it is, whatever the environment holds
    plain = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert Settings(database_url=plain).shared_db_url() == plain == replica_db_url(plain)
    # the environment names another database, or none: a clear error, not a login failure
    monkeypatch.setenv("TUNESERVE_DATABASE_URL", SECRET_URL.replace("db.internal", "other"))
    with pytest.raises(RuntimeError, match="set TUNESERVE_DATABASE_URL to the full URL"):
        replica_db_url(shared)
    monkeypatch.delenv("TUNESERVE_DATABASE_URL")
    with pytest.raises(RuntimeError, match=r"tuneserve:\*\*\*@db.internal"):
        replica_db_url(shared)


def test_the_ingress_reads_the_admin_key_where_it_runs(monkeypatch):
    """Serve may build the application on a node without the key (on Kubernetes only the head
    holds it): the ingress then hashes the key of its own environment."""
    import hashlib

    from service.settings import replica_admin_hash

    monkeypatch.delenv("TUNESERVE_ADMIN_KEY", raising=False)
    assert replica_admin_hash(None) is None
    assert replica_admin_hash("abc") == "abc"
    monkeypatch.setenv("TUNESERVE_ADMIN_KEY", "head-only-key")
    assert replica_admin_hash(None) == hashlib.sha256(b"head-only-key").hexdigest()
