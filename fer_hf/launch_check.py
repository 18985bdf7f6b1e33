"""Refuse a distributed launch whose machine count, ranks or address do not add up, before any process waits on them.

Training calls `check_launch()` first: it reads the variables torchrun (under `accelerate launch`) gives each process
(WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_WORLD_SIZE, GROUP_RANK or NODE_RANK, MASTER_ADDR,
MASTER_PORT) and, inside a SLURM step, SLURM_NNODES / SLURM_NODEID. A launch that does not add up raises
LaunchError with one sentence naming the accelerate field and the variable, e.g. a machine_rank not below
num_machines, a num_processes that is not num_machines x the processes of this machine, an empty main_process_ip or a
port outside 1..65535. A single process (no WORLD_SIZE) is not checked. FER_HF_LAUNCH_CHECK=0 skips the check.

An accelerate config file can be checked before submitting a job, with the flags `accelerate launch` would get:

    python -m fer_hf.launch_check recipes/accelerate_configs/multi_node.yaml --machine_rank 1 --num_machines 2

It catches what accelerate lets through silently: a num_processes that num_machines does not divide (torchrun would
start num_processes // num_machines per machine), a machine_rank outside 0..num_machines-1, no main_process_ip.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SKIP_ENV = "FER_HF_LAUNCH_CHECK"


class LaunchError(ValueError):
    """A distributed launch (or accelerate config) whose sizes, ranks or address are inconsistent."""


@dataclass(frozen=True)
class Launch:
    """The process's place in a distributed launch, as torchrun described it."""

    world_size: int
    rank: int
    local_rank: int
    local_world_size: int
    num_machines: int
    machine_rank: int
    address: str
    port: int

    def describe(self) -> str:
        return (
            f"process {self.rank} of {self.world_size}: machine {self.machine_rank} of {self.num_machines}, "
            f"local process {self.local_rank} of {self.local_world_size}, rendezvous {self.address}:{self.port}"
        )


def _int(env: Mapping[str, str], name: str, field: str, default: int | None = None) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"{field} ({name}) is {raw!r}, not a whole number") from None


def check_port(port: int | None, field: str = "main_process_port (MASTER_PORT)") -> None:
    if port is None or not 1 <= port <= 65535:
        raise LaunchError(f"{field} is {port}; a TCP port is a number from 1 to 65535 (accelerate's default: 29500)")


def check_launch(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch this process belongs to (None for a single process); LaunchError if it does not add up."""
    # Long, and kept in one piece: one check per launch variable, in the order accelerate reads them.
    env = os.environ if env is None else env
    if env.get(SKIP_ENV, "1") == "0" or "WORLD_SIZE" not in env:
        return None
    world = _int(env, "WORLD_SIZE", "num_processes")
    rank = _int(env, "RANK", "the process rank", 0)
    local_rank = _int(env, "LOCAL_RANK", "the local process rank", 0)
    local_world = _int(env, "LOCAL_WORLD_SIZE", "processes per machine", world)
    machines = _int(env, "GROUP_WORLD_SIZE", "num_machines")
    node_var = "GROUP_RANK" if env.get("GROUP_RANK", "").strip() else "NODE_RANK"
    machine_rank = _int(env, node_var, "machine_rank", 0)
    if world < 1:
        raise LaunchError(f"num_processes (WORLD_SIZE) is {world}; it must be at least 1")
    if local_world < 1 or local_world > world:
        raise LaunchError(
            f"the processes of this machine (LOCAL_WORLD_SIZE {local_world}) must be from 1 to num_processes "
            f"(WORLD_SIZE {world}), the total across all machines"
        )
    if not 0 <= rank < world:
        raise LaunchError(f"the process rank (RANK {rank}) must be from 0 to {world - 1} (WORLD_SIZE {world})")
    if not 0 <= local_rank < local_world:
        raise LaunchError(
            f"the local process rank (LOCAL_RANK {local_rank}) must be from 0 to {local_world - 1} "
            f"(LOCAL_WORLD_SIZE {local_world})"
        )
    if machines is None:  # not torchrun: the machines follow from the sizes when every machine runs as many
        if world % local_world:
            raise LaunchError(
                f"num_processes (WORLD_SIZE {world}) is not a multiple of the processes of this machine "
                f"(LOCAL_WORLD_SIZE {local_world}); num_processes counts every process on all machines"
            )
        machines = world // local_world
    if machines < 1:
        raise LaunchError(f"num_machines (GROUP_WORLD_SIZE) is {machines}; it must be at least 1")
    if not 0 <= machine_rank < machines:
        raise LaunchError(
            f"machine_rank ({node_var} {machine_rank}) must be from 0 to {machines - 1} with num_machines {machines}: "
            f"give each machine its own --machine_rank, 0 on the machine at main_process_ip"
        )
    if world != machines * local_world:
        raise LaunchError(
            f"num_processes (WORLD_SIZE {world}) is not num_machines {machines} x {local_world} processes on this "
            f"machine (LOCAL_WORLD_SIZE): give every machine the same --num_processes, the total across all machines "
            f"(num_machines x GPUs per machine)"
        )
    ranked = all(env.get(name, "").strip() for name in (node_var, "LOCAL_RANK", "LOCAL_WORLD_SIZE"))
    if ranked and rank != machine_rank * local_world + local_rank:
        raise LaunchError(
            f"the process rank (RANK {rank}) is not machine_rank {machine_rank} x {local_world} + local rank "
            f"{local_rank}: two machines may share one --machine_rank"
        )
    address = env.get("MASTER_ADDR", "").strip()
    if not address and world > local_world:
        raise LaunchError(
            "main_process_ip (MASTER_ADDR) is empty: set it to the address of machine 0, the same on every machine"
        )
    port = _int(env, "MASTER_PORT", "main_process_port", 29500)
    check_port(port)
    _check_slurm(env, machines, machine_rank, node_var)
    return Launch(world, rank, local_rank, local_world, machines, machine_rank, address or "127.0.0.1", port)


def _check_slurm(env: Mapping[str, str], machines: int, machine_rank: int, node_var: str) -> None:
    """Inside a SLURM step of several machines, the launch must span the step's nodes, one machine_rank each."""
    if machines < 2 or "SLURM_NODEID" not in env or "SLURM_NNODES" not in env:
        return
    nodes = _int(env, "SLURM_NNODES", "SLURM's node count")
    node_id = _int(env, "SLURM_NODEID", "SLURM's node id")
    if nodes != machines:
        raise LaunchError(
            f"num_machines (GROUP_WORLD_SIZE {machines}) is not the {nodes} nodes of this SLURM step "
            f"(SLURM_NNODES): pass --num_machines $SLURM_NNODES"
        )
    if node_id != machine_rank:
        raise LaunchError(
            f"machine_rank ({node_var} {machine_rank}) is not this node's SLURM_NODEID {node_id}: pass "
            f"--machine_rank $SLURM_NODEID so that no two nodes share a rank (or set {SKIP_ENV}=0 to skip this check)"
        )


def check_config(
    path: str,
    num_machines: int | None = None,
    machine_rank: int | None = None,
    num_processes: int | None = None,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
) -> str:
    """Read an accelerate config file as `accelerate launch` does (flags override it); a summary, or LaunchError."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        config = load_config_from_file(path)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise LaunchError(f"{path}: {err}") from None
    machines = config.num_machines if num_machines is None else num_machines
    rank = config.machine_rank if machine_rank is None else machine_rank
    processes = config.num_processes if num_processes is None else num_processes
    address = config.main_process_ip if main_process_ip is None else main_process_ip
    port = config.main_process_port if main_process_port is None else main_process_port
    if machines is None or machines < 1:
        raise LaunchError(f"{path}: num_machines is {machines}; it must be at least 1")
    if not 0 <= (rank or 0) < machines:
        raise LaunchError(
            f"{path}: machine_rank {rank} must be from 0 to {machines - 1} with num_machines {machines} "
            "(0 on the machine at main_process_ip)"
        )
    if processes is None or processes < 1:
        raise LaunchError(f"{path}: num_processes is {processes}; give the total across all machines")
    if processes % machines:
        raise LaunchError(
            f"{path}: num_processes {processes} is not a multiple of num_machines {machines}; num_processes is the "
            f"total across all machines (num_machines x GPUs per machine), and accelerate would start "
            f"{processes // machines} per machine"
        )
    if processes < machines:
        raise LaunchError(f"{path}: num_processes {processes} is fewer than num_machines {machines}")
    if machines > 1 and not (address or "").strip():
        raise LaunchError(f"{path}: main_process_ip is empty; a multi-machine launch needs the address of machine 0")
    if port is not None:
        check_port(port, f"{path}: main_process_port")
    kind = getattr(config.distributed_type, "value", config.distributed_type)
    where = f", machine 0 at {address}:{port or 29500}" if machines > 1 else ""
    return (
        f"{path}: {kind}, {machines} machine(s) x {processes // machines} process(es) = {processes}, "
        f"this is machine {rank or 0}{where}, mixed precision {config.mixed_precision}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.launch_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", metavar="CONFIG", help="an accelerate config file (YAML or JSON)")
    for name in ("num_machines", "machine_rank", "num_processes", "main_process_port"):
        parser.add_argument(f"--{name}", type=int, help="as accelerate launch's flag")
    parser.add_argument("--main_process_ip", help="as accelerate launch's flag")
    args = parser.parse_args(argv)
    print(check_config(**vars(args)))
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
