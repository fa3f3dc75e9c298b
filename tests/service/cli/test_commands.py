import subprocess
import sys

from training import artifacts


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_does_not_import_the_heavy_stack():
    code = "import sys; from service import cli; cli.parser(); print(sorted(m for m in ('ray','torch','onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    assert "run" in _cli("--help").stdout


def test_import_base_is_done_once(tiny_encoder_dir, tmp_path):
    first = _cli("import-base", "--home", str(tmp_path), "--source", str(tiny_encoder_dir))
    assert first.returncode == 0, first.stderr
    assert "imported base" in first.stdout
    onnx = artifacts.model_dir(tmp_path, "base") / "onnx" / "model.onnx"
    mtime = onnx.stat().st_mtime
    second = _cli("import-base", "--home", str(tmp_path), "--source", str(tiny_encoder_dir))
    assert "already present" in second.stdout
    assert onnx.stat().st_mtime == mtime
    listed = _cli("models", "--home", str(tmp_path))
    assert listed.stdout.split()[:2] == ["base", "feature-extraction"]
