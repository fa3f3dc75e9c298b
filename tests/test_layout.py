"""The layout rules of DESIGN.md, checked by walking every module: which module may import
what (each `from X import Y` recorded as X.Y, so `from ray import serve` is `ray.serve`), a
request and a job flowing down the folders and never back up, and every module and function
kept small."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def _imports(path: Path) -> set[str]:
    """Every name a module imports, anywhere in it: `import a.b` as a.b, `from a import b` as
    a.b (and a itself), relative imports resolved against the module's package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _uses(names: set[str], prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


def test_imports_are_recorded_with_their_names():
    tree = ROOT / "service" / "main.py"
    assert "ray.serve" in _imports(tree)  # `from ray import serve`, the rule's own case


# (module prefix, the only files or folders that may import it)
ONLY_IN = [
    ("ray.serve", ("service/api/", "service/deployments/", "service/main.py")),
    ("ray.job_submission", ("service/jobs/ray_jobs.py",)),
    ("ray.train", ("training/loop.py", "training/rendezvous.py", "training/__main__.py")),
    ("onnxruntime", ("service/inference/", "training/onnx.py", "training/embed.py")),
]


@pytest.mark.parametrize("prefix,allowed", ONLY_IN)
def test_heavy_apis_stay_in_their_modules(prefix, allowed):
    offenders = [
        _rel(p)
        for p in _modules(*PACKAGES)
        if _uses(_imports(p), prefix) and not _rel(p).startswith(allowed)
    ]
    assert offenders == [], f"{prefix} imported outside {allowed}"


def test_training_never_imports_service():
    assert [_rel(p) for p in _modules("training") if _uses(_imports(p), "service")] == []


LIGHT_TRAINING = (
    "training.config",
    "training.artifacts",
    "training.events",
    "training.data",
    "training.spans",
    "training.embed",
    "training.heads",
)


def test_service_imports_only_the_light_parts_of_training():
    """Except the CLI's local training commands, which import the rest inside a command
    (tests/service/cli/test_commands.py shows `--help` imports no torch)."""
    offenders = {}
    for p in _modules("service"):
        if _rel(p).startswith("service/cli/"):
            continue
        heavy = sorted(
            n
            for n in _imports(p)
            if _uses({n}, "training")
            and n != "training"
            and not any(_uses({n}, light) for light in LIGHT_TRAINING)
        )
        if heavy:
            offenders[_rel(p)] = heavy
    assert offenders == {}


# a request and a job flow down the tree: what each part of `service` must never import
NEVER_UP = {
    "service/inference/": ("service.api", "service.deployments", "service.jobs", "service.cli",
                           "service.main", "service.tenancy", "service.registry", "service.db",
                           "service.schemas", "service.auth", "service.files"),
    "service/schemas/": ("service.api", "service.deployments", "service.jobs", "service.cli",
                         "service.main", "service.inference", "service.tenancy"),
    "service/jobs/": ("service.api", "service.deployments", "service.cli", "service.main",
                      "service.inference", "service.tenancy"),
    "service/deployments/": ("service.api", "service.cli", "service.main"),
    "service/api/": ("service.cli", "service.main"),
    "service/": ("service.cli",),  # nothing but the CLI itself imports the CLI
}  # fmt: skip


def test_requests_and_jobs_flow_down_the_folders():
    offenders = {}
    for p in _modules("service"):
        rel = _rel(p)
        if rel.startswith("service/cli/"):
            continue
        folder = max((f for f in NEVER_UP if rel.startswith(f)), key=len)
        up = sorted(n for n in _imports(p) if any(_uses({n}, bad) for bad in NEVER_UP[folder]))
        if up:
            offenders[rel] = up
    assert offenders == {}


def test_the_leaf_modules_import_no_request_or_job_path():
    leaves = (
        "errors.py",
        "settings.py",
        "db.py",
        "auth.py",
        "registry.py",
        "files.py",
        "tenancy.py",
    )
    path_parts = (
        "service.api",
        "service.deployments",
        "service.jobs",
        "service.inference",
        "service.cli",
        "service.main",
    )
    offenders = {
        name: sorted(
            n for n in _imports(ROOT / "service" / name) if any(_uses({n}, x) for x in path_parts)
        )
        for name in leaves
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_grab_bag_modules():
    bags = {"utils", "helpers", "common", "misc"}
    assert [_rel(p) for p in _modules(*PACKAGES) if p.stem in bags] == []


def test_every_module_and_function_is_small():
    """Every module under 300 lines, every function under 60, in service/, training/, bench/."""
    big = []
    for p in _modules(*PACKAGES, "bench"):
        if _rel(p).startswith("service/migrations/"):
            continue  # Alembic's autogenerated schema steps: never edited once released
        text = p.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{_rel(p)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{_rel(p)}:{node.lineno} {node.name}(): {n} lines")
    assert big == []


# where an address may be written down: the settings' defaults, the local Ray of the CLI and
# the HTTP client's default URL. Everything else reads its place from the settings.
LOCAL_ADDRESS_ALLOWED = {
    "service/settings.py",
    "service/cli/local_ray.py",
    "service/cli/remote.py",
    "service/cli/run.py",
}


def test_nothing_outside_the_settings_says_local():
    offenders = [
        _rel(p)
        for p in _modules(*PACKAGES)
        if _rel(p) not in LOCAL_ADDRESS_ALLOWED
        and any(a in p.read_text() for a in ("127.0.0.1", "localhost", "0.0.0.0", "/tmp/"))
    ]
    assert offenders == []
