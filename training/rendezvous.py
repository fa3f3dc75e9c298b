"""torch.distributed's rendezvous with no network listener when every worker is on one node.

Ray Train starts torch.distributed for every run, through a TCPStore on the rank-0 worker;
torch binds that store's server to every interface whatever host it is given (checked with
torch 2.13, both of its TCPStore backends), so on one machine a port open to the host's
network for as long as a job trains, where everything else of ours stays on loopback. When
all workers share one node there is no need for a network: a FileStore in a private (0700)
folder under the run's folder (deleted with it) does the same rendezvous. Across nodes Ray's TCP rendezvous stays (on
Kubernetes, the NetworkPolicy keeps it inside the cluster).

Written by hand: Ray's TorchConfig offers only "env" and "tcp" rendezvous, so this is its
backend with `on_start` replaced for the one-node case (Ray Train's Backend hooks are the
extension point; the env-var set-up it calls is Ray's own, private in Ray 2.60).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


def _private_dir(parent: str) -> str:
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="rendezvous-", dir=parent)  # 0700: this user's only


def _join(backend: str, rank: int, world_size: int, store: str, timeout_s: int) -> None:
    dist.init_process_group(
        backend=backend,
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def _torch_backend(worker_group) -> str:
    return "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"


class _OneNodeBackend(_TorchBackend):
    folder: str | None = None  # this run's rendezvous folder (one controller, one run)

    def on_start(self, worker_group, backend_config) -> None:
        if len(set(worker_group.execute(_node))) > 1 or not dist.is_available():
            super().on_start(worker_group, backend_config)  # across nodes: Ray's TCP store
            return
        # a new folder each start: a run restarted after a worker failure meets afresh
        self.folder = folder = worker_group.execute_single(0, _private_dir, backend_config.folder)
        store = os.path.join(folder, "store")
        worker_group.execute(_set_torch_distributed_env_vars)
        backend = backend_config.backend or _torch_backend(worker_group)
        n = len(worker_group)
        ray.get(
            [
                worker_group.execute_single_async(
                    i, _join, backend, i, n, store, backend_config.timeout_s
                )
                for i in range(n)
            ]
        )

    def on_shutdown(self, worker_group, backend_config) -> None:
        super().on_shutdown(worker_group, backend_config)
        if self.folder:  # seen from here on one machine, or on the runs' shared volume
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@dataclass
class OneNodeTorchConfig(TorchConfig):
    """TorchConfig whose rendezvous, when all workers share a node, is a file under
    `folder` (the run's folder), not a port."""

    folder: str = ""

    @property
    def backend_cls(self):
        return _OneNodeBackend
