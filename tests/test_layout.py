"""The import rules of DESIGN.md, checked by walking every module's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _uses(names: set[str], prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


# (module prefix, the only files that may import it)
ONLY_IN = [
    ("ray.serve", {"service/deployments.py", "service/api.py", "service/main.py"}),
    ("ray.job_submission", {"service/jobs.py"}),
    ("ray.train", {"training/loop.py", "training/__main__.py"}),
    ("onnxruntime", {"service/runtime.py", "training/export.py"}),
]


@pytest.mark.parametrize("prefix,allowed", ONLY_IN)
def test_heavy_apis_stay_in_their_modules(prefix, allowed):
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("service", "training")
        for p in _modules(pkg)
        if _uses(_imports(p), prefix) and str(p.relative_to(ROOT)) not in allowed
    ]
    assert offenders == [], f"{prefix} imported outside {sorted(allowed)}"


def test_training_never_imports_service():
    offenders = [str(p) for p in _modules("training") if _uses(_imports(p), "service")]
    assert offenders == []


def test_service_imports_only_the_light_parts_of_training():
    # training.spans: the one answer-span function, shared by QA evaluation and serving;
    # training.data: the validators uploads pass before they are accepted
    light = {"training", "training.config", "training.artifacts", "training.spans", "training.data"}
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            n for n in _imports(p) if _uses({n}, "training") and n not in light
        )
        for p in _modules("service")
        if p.name != "cli.py"  # local train/export commands import training inside the command
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_cli_imports_training_only_inside_commands():
    tree = ast.parse((ROOT / "service" / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {getattr(n, "module", None) or n.names[0].name for n in top}
    assert not any(_uses({n}, "training") or _uses({n}, "ray") or n == "torch" for n in names)


def test_no_grab_bag_modules():
    assert not [
        p
        for pkg in ("service", "training")
        for p in _modules(pkg)
        if p.stem in {"utils", "helpers", "common", "misc"}
    ]


# where an address may be written down: the settings' defaults, the local `tuneserve run`
# and the HTTP client's default URL. Everything else reads its place from the settings.
LOCAL_ADDRESS_ALLOWED = {"service/settings.py", "service/cli.py", "service/client.py"}


def test_nothing_outside_the_settings_says_local():
    offenders = [
        str(p.relative_to(ROOT))
        for package in ("service", "training")
        for p in _modules(package)
        if str(p.relative_to(ROOT)) not in LOCAL_ADDRESS_ALLOWED
        and any(a in p.read_text() for a in ("127.0.0.1", "localhost", "0.0.0.0", "/tmp/"))
    ]
    assert offenders == []
