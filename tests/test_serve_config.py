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
