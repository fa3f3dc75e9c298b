import socket
import subprocess
import sys
from pathlib import Path

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


def test_a_service_port_is_free_and_below_the_ephemeral_range():
    """Ray's outgoing connections draw local ports from the ephemeral range; a direct-ingress
    port there can be taken between the check and the replica's bind."""
    from service.cli.local_ray import free_service_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_service_port() for _ in range(20)}
    assert all(20000 <= p < low for p in ports)
    assert len(ports) > 1  # not one fixed port that two services would both pick
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
