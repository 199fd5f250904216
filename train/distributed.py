"""Distributed training and reproducibility: the torchrun environment (NCCL on GPU, gloo on CPU),
collectives the loop needs, seeds, deterministic kernels, every RNG's state (saved in checkpoints
so a resumed run continues exactly) and a sampler that can skip the batches a run has seen."""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from imkd_core.device import resolve_device


@dataclasses.dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str) -> DistEnv:
    """Single process, or the torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK): NCCL on CUDA,
    gloo on CPU, one GPU per process."""
    requested = resolve_device(device_arg)  # DeviceError for 'tpu', 'cuda' without CUDA, ...
    want_cuda = requested.type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        index = local if world > 1 or requested.index is None else requested.index
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    env = DistEnv(rank, world, local, device)
    if env.enabled:
        backend = "nccl" if want_cuda else "gloo"
        kw: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=60)}
        if want_cuda:
            kw["device_id"] = device
        try:
            dist.init_process_group(**kw)
        except TypeError:  # older torch without device_id
            kw.pop("device_id", None)
            dist.init_process_group(**kw)
    return env


def barrier(env: DistEnv) -> None:
    if env.enabled:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.local_rank])
        else:
            dist.barrier()


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on any rank (stop decisions must agree)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels where torch has them (warn, do not fail, where it has none)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG state as weights_only-loadable plain types and tensors."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective under DDP)."""
    mine = rng_state()
    if not env.enabled:
        return [mine]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, mine)
    return out


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (shuffled by (seed, epoch), sharded by rank) that can skip the first
    `skip` indices of the epoch, so a resumed run sees exactly the batches it had not seen."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def set_skip(self, n: int) -> None:
        self.skip = int(n)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def worker_init(worker_id: int) -> None:
    """Fixed worker seeds: numpy/python from torch's per-worker seed (base_seed + id). The dataset's
    augmentation draws depend only on (seed, epoch, index) anyway."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
