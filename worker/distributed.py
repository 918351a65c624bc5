"""Who am I in the job, and the process group: Slurm or torchrun variables -> torch.distributed.

Slurm (`srun`, one task per GPU): SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, master = first host of
SLURM_JOB_NODELIST, port derived from SLURM_JOB_ID (so concurrent jobs on a node don't collide).
torchrun: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Neither: one process, no group.
Explicit torchrun-style variables win over Slurm's (torchrun inside an allocation sets them).

NCCL on CUDA, gloo on CPU, with the spec's short timeout so a dead peer ends the job quickly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job, as the launcher described it."""

    rank: int
    world_size: int
    local_rank: int
    local_size: int
    master_addr: str
    master_port: int
    launcher: str  # "slurm" | "torchrun" | "none"


def expand_nodelist(nodelist: str) -> list[str]:
    """Hosts of a Slurm node list such as 'node[1-3,7],gpu01' (pure; mirrors `scontrol show hostnames`)."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            if "-" in r:
                lo, hi = r.split("-", 1)
                width = len(lo)
                hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1)]
            else:
                hosts.append(f"{prefix}{r}{suffix}")
    return hosts


def _first_host(nodelist: str) -> str:
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10, check=True
            ).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass  # fall back to our own parser
    return expand_nodelist(nodelist)[0]


def port_for_job(job_id: str) -> int:
    """A port in 20000..39999 derived from the job id (digits only; array ids like '12_3' too)."""
    digits = int(re.sub(r"\D", "", job_id) or "0")
    return 20000 + digits % 20000


def detect(environ: dict[str, str] | None = None) -> DistEnv:
    """Rank, world size and rendezvous address from torchrun's or Slurm's variables (else one process)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_size=int(env.get("LOCAL_WORLD_SIZE", env.get("LOCAL_SIZE", world))),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        world = int(env["SLURM_NTASKS"])
        per_node = env.get("SLURM_NTASKS_PER_NODE", "")
        local_size = int(per_node.split("(")[0]) if per_node[:1].isdigit() else world
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            local_size=local_size,
            master_addr=env.get("MASTER_ADDR") or _first_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or port_for_job(env.get("SLURM_JOB_ID", "0"))),
            launcher="slurm",
        )
    return DistEnv(0, 1, 0, 1, "127.0.0.1", 29500, "none")


def pick_device(requested: str, local_rank: int) -> torch.device:
    """The device this rank computes on: the spec's choice, one GPU per local rank on CUDA."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available on this node")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


HOST_DEADLINE_MARGIN_S = 30.0
"""With host-side deadlines, NCCL's own watchdog waits this much longer, so ours fires first and reports."""


def init(env: DistEnv, device: torch.device, timeout_s: float, host_waits: bool = True) -> str | None:
    """Join the process group (no-op for one process). Returns the backend name.

    `host_waits=True` (the fast engine): NCCL stays asynchronous to the host, and a dead peer is found
    by the host's own deadline on device events (`wait_device`, worker/pipeline.py); NCCL's watchdog
    timeout is set a margin later. `False` (the reference pp/single/dp loops): NCCL's blocking wait,
    which raises in this thread after `timeout_s` (it polls every 1 ms).
    """
    if env.world_size == 1:
        return None
    import torch.distributed as dist

    # DeepSpeed (tp mode) reads the torchrun-style names.
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    os.environ.update(
        RANK=str(env.rank), WORLD_SIZE=str(env.world_size), MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port)
    )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and host_waits:
        timeout_s += HOST_DEADLINE_MARGIN_S
    if backend == "nccl" and not host_waits:
        # A dead peer then raises in this thread after `timeout_s` (and becomes an error event + exit 3)
        # instead of NCCL's watchdog aborting the process with no record of why.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    return backend


def barrier(device: torch.device, timeout_s: float | None = None) -> None:
    """A barrier that also drains the device's queue (an all-reduce of one element), within `timeout_s`."""
    import torch.distributed as dist

    if dist.is_initialized():
        flag = torch.zeros(1, device=device)
        dist.all_reduce(flag)
    wait_device(device, timeout_s)


def wait_device(device: torch.device, timeout_s: float | None = None) -> None:
    """Wait until the device has done everything queued; past `timeout_s`, raise (a peer is lost).

    Polls an event instead of `synchronize()`, which would block forever on a hung NCCL op.
    """
    if device.type != "cuda":
        return
    if timeout_s is None:
        torch.cuda.synchronize(device)
        return
    event = torch.cuda.Event()
    event.record()
    wait_event(event, timeout_s)


def gather_objects(obj, world_size: int) -> list:
    """Every rank's `obj`, on every rank (small records only)."""
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def is_peer_failure(exc: BaseException) -> bool:
    """Whether an exception means another rank died or stopped answering (vs. a bug on this rank)."""
    import torch.distributed as dist

    text = str(exc).lower()
    markers = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "peer", "nccl")
    dist_errors = tuple(
        getattr(dist, n) for n in ("DistError", "DistBackendError", "DistNetworkError") if hasattr(dist, n)
    )
    return isinstance(exc, dist_errors) or (isinstance(exc, RuntimeError) and any(m in text for m in markers))


class PeerTimeout(RuntimeError):
    """The device waited longer than the job's timeout for a peer: the peer is dead or stuck."""


def wait_event(event, timeout_s: float) -> None:
    """Wait for a CUDA event, polling, and raise PeerTimeout past the deadline (a hung NCCL op never returns)."""
    if event.query():
        return
    deadline = time.monotonic() + timeout_s
    while not event.query():
        if time.monotonic() > deadline:
            raise PeerTimeout(f"timed out after {timeout_s:.0f} s waiting for a peer rank")
        time.sleep(50e-6)
