"""training/rendezvous.py: workers on one node meet through a file and open no port to the
network; Ray's own rendezvous (the control) does open one, so the check can see it."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
import ray.train
import torch
import torch.distributed as dist
from ray import cloudpickle
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from training.rendezvous import OneNodeTorchConfig

LISTEN = "0A"  # TCP state in /proc/net/tcp*
# the workers cannot import a test module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _exposed_listeners() -> list[str]:
    """This process's listening TCP sockets on an address other than loopback, from /proc."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    exposed = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != LISTEN or inode not in inodes:
                continue
            raw = bytes.fromhex(local.split(":")[0])
            # /proc writes each 32-bit word of the address in host (little-endian) order
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            addr = ipaddress.ip_address(b"".join(words))
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            if not addr.is_loopback:
                exposed.append(f"{addr}:{int(local.split(':')[1], 16)}")
    return exposed


def _loop(config):
    total = torch.ones(1)
    dist.all_reduce(total)  # the process group works
    rank = ray.train.get_context().get_world_rank()
    seen = {
        "world": int(total.item()),
        "exposed": _exposed_listeners(),
        "folders": {str(f): f.stat().st_mode & 0o777 for f in config["run"].glob("rendezvous-*")},
    }
    (Path(config["out"]) / f"rank-{rank}.json").write_text(json.dumps(seen))


def _run(tmp_path: Path, name: str, torch_config: TorchConfig) -> list[dict]:
    """What each worker saw: the world's size and its own exposed listeners."""
    out = tmp_path / f"seen-{name}"
    out.mkdir()
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"out": str(out), "run": tmp_path / "run"},
        torch_config=torch_config,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "storage")),
    )
    trainer.fit()
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]


@pytest.mark.usefixtures("ray_session")
def test_workers_on_one_node_meet_through_a_file_and_listen_nowhere(tmp_path):
    ours = _run(tmp_path, "file", OneNodeTorchConfig(folder=str(tmp_path / "run")))
    assert [r["world"] for r in ours] == [2, 2] and [r["exposed"] for r in ours] == [[], []]
    # the store's folder, under the run's folder, is this user's alone, and goes with the run
    assert ours[0]["folders"] == ours[1]["folders"]
    ((folder, mode),) = ours[0]["folders"].items()
    assert Path(folder).parent == tmp_path / "run" and mode == 0o700
    assert not Path(folder).exists()

    rays = _run(tmp_path, "tcp", TorchConfig())  # the control: torch's TCPStore, all interfaces
    assert [r["world"] for r in rays] == [2, 2]
    assert rays[0]["exposed"], "the check saw no listener where torch opens one"
