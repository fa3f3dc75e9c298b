"""Render a kustomization and validate every object it makes, without a cluster.

    python deploy/validate.py deploy/k8s/overlays/dev [--crds DIR] [--kubernetes 1.32]

- core kinds against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict: an
  unknown field is an error, as `kubectl apply --validate=strict` makes it);
- KubeRay kinds (RayService, RayJob, RayCluster) against the openAPIV3Schema of their CRDs,
  made strict the same way (a structural schema would silently prune an unknown field);
- a RayService's `serveConfigV2` against Ray Serve's own `ServeDeploySchema`.

Prints one line per problem and exits 1 if there is any. The tests call the same functions.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml

KUBERNETES_VERSION = "1.32"
KUBERAY_GROUP = "ray.io"


def render(kustomization: Path) -> list[dict]:
    """The objects `kubectl apply -k` would send: `kubectl kustomize`, else `kustomize build`."""
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(kustomization)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(kustomization)]
    else:
        raise FileNotFoundError("neither kubectl nor kustomize is on PATH")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ValueError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _strict(schema: dict) -> dict:
    """A copy of a CRD schema in which an object refuses fields it does not declare."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    # metadata is ObjectMeta, which the CRD leaves to the API server ("type: object")
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


@cache
def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, for every CRD file in the folder."""
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                api = f"{spec['group']}/{version['name']}"
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(api, spec["names"]["kind"])] = _strict(schema)
    return schemas


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def validate_object(obj: dict, crd_dir: Path | None, k8s_version: str) -> list[str]:
    import jsonschema

    api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if api.split("/")[0] == KUBERAY_GROUP:
        if crd_dir is None:
            return []
        schema = crd_schemas(crd_dir).get((api, kind))
        if schema is None:
            return [f"{name_of(obj)}: no CRD in {crd_dir} defines {api} {kind}"]
        validator = jsonschema.Draft7Validator(schema)
        problems = [
            f"{name_of(obj)}: {_where(e.absolute_path)}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        ]
        return problems + _serve_config_problems(obj)
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(obj)}: {_where(exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(obj)}: Kubernetes {k8s_version} has no {api} {kind}"]
    return []


def _serve_config_problems(obj: dict) -> list[str]:
    if obj.get("kind") != "RayService":
        return []
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    text = (obj.get("spec") or {}).get("serveConfigV2")
    if not isinstance(text, str):
        return [f"{name_of(obj)}: spec.serveConfigV2: missing"]
    try:
        ServeDeploySchema.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        return [
            f"{name_of(obj)}: spec.serveConfigV2: {_where(e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
    return []


def validate(
    objects: list[dict], crd_dir: Path | None, k8s_version: str = KUBERNETES_VERSION
) -> list[str]:
    return [p for obj in objects for p in validate_object(obj, crd_dir, k8s_version)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kustomizations", nargs="+", type=Path)
    p.add_argument("--crds", type=Path, help="folder of the KubeRay CRD YAML files")
    p.add_argument("--kubernetes", default=KUBERNETES_VERSION, help="Kubernetes version")
    args = p.parse_args(argv)
    failed = False
    for kustomization in args.kustomizations:
        objects = render(kustomization)
        problems = validate(objects, args.crds, args.kubernetes)
        for line in problems:
            print(f"{kustomization}: {line}")
        failed |= bool(problems)
        print(f"{kustomization}: {len(objects)} objects, {len(problems)} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
