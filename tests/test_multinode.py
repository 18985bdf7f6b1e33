"""Multi-node training: the launch check, the accelerate configs and SLURM script, and a 2-machine job on one host.

The 2-machine job is `accelerate launch --config_file recipes/accelerate_configs/multi_node.yaml --num_machines 2
--machine_rank R --main_process_ip 127.0.0.1 ...` twice at once, one process per "machine", gloo on CPU. Run as a
script (under `accelerate launch`) this file is the entry point: it trains as `python -m fer_hf.train` does and
each rank writes a digest of its parameters (tests/test_train.py's DigestCallback).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "accelerate_configs"
MULTI_NODE = CONFIGS / "multi_node.yaml"
KILL_ENV = "FER_HF_TEST_KILL"  # "RANK:STEP": that rank SIGKILLs itself at the end of that optimizer step

GOOD = {  # what torchrun gives process 3 of 2 machines x 2 processes
    "WORLD_SIZE": "4",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29500",
}


# --- the check before training ----------------------------------------------------------------------------------


def test_a_consistent_launch_passes_and_a_single_process_is_not_checked():
    from fer_hf.launch_check import check_launch

    launch = check_launch(GOOD)
    assert (launch.num_machines, launch.machine_rank, launch.world_size, launch.rank) == (2, 1, 4, 3)
    assert check_launch({}) is None  # python -m fer_hf.train: no WORLD_SIZE
    assert check_launch({**GOOD, "SLURM_NNODES": "2", "SLURM_NODEID": "1"}) is not None
    assert check_launch({**GOOD, "GROUP_RANK": "7", "FER_HF_LAUNCH_CHECK": "0"}) is None  # the way out
    node_rank = {k: v for k, v in GOOD.items() if k not in ("GROUP_WORLD_SIZE", "GROUP_RANK")} | {"NODE_RANK": "1"}
    assert check_launch(node_rank).num_machines == 2  # not torchrun: machines = WORLD_SIZE / LOCAL_WORLD_SIZE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"GROUP_RANK": "2"}, r"machine_rank \(GROUP_RANK 2\) must be from 0 to 1 with num_machines 2"),
        (
            {"GROUP_WORLD_SIZE": None, "GROUP_RANK": None, "NODE_RANK": "2", "RANK": "3"},
            r"machine_rank \(NODE_RANK 2\) must be from 0 to 1",
        ),
        ({"WORLD_SIZE": "6"}, r"num_processes \(WORLD_SIZE 6\) is not num_machines 2 x 2 processes on this machine"),
        ({"RANK": "1"}, r"the process rank \(RANK 1\) is not machine_rank 1 x 2 \+ local rank 1"),
        ({"RANK": "4"}, r"the process rank \(RANK 4\) must be from 0 to 3"),
        ({"MASTER_ADDR": " "}, r"main_process_ip \(MASTER_ADDR\) is empty"),
        ({"MASTER_PORT": "70000"}, r"main_process_port \(MASTER_PORT\) is 70000; a TCP port is a number from 1"),
        ({"MASTER_PORT": "0"}, r"main_process_port \(MASTER_PORT\) is 0"),
        ({"MASTER_PORT": "http"}, r"main_process_port \(MASTER_PORT\) is 'http', not a whole number"),
        ({"SLURM_NNODES": "3", "SLURM_NODEID": "1"}, r"num_machines \(GROUP_WORLD_SIZE 2\) is not the 3 nodes"),
        ({"SLURM_NNODES": "2", "SLURM_NODEID": "0"}, r"is not this node's SLURM_NODEID 0: pass --machine_rank"),
    ],
)
def test_an_inconsistent_launch_is_refused_naming_the_field(change, message):
    from fer_hf.launch_check import LaunchError, check_launch

    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(LaunchError, match=message):
        check_launch(env)


def test_training_with_a_bad_rank_stops_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    env = {**_clean_env(), **GOOD, "GROUP_RANK": "2"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fer_hf.train",
            str(REPO / "recipes" / "smoke.yaml"),
            "--training.output_dir",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: machine_rank (GROUP_RANK 2) must be from 0 to 1 with num_machines 2: give each machine its own "
        "--machine_rank, 0 on the machine at main_process_ip (run with --debug for the traceback)"
    )
    assert not out.exists()


# --- the accelerate configs and the SLURM script --------------------------------------------------------------------


def test_multi_node_and_fsdp_configs_parse_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from transformers.models.vit import modeling_vit

    from fer_hf.launch_check import check_config

    multi = load_config_from_file(str(MULTI_NODE))
    assert (multi.distributed_type, multi.num_machines, multi.rdzv_backend) == (DistributedType.MULTI_GPU, 2, "static")
    assert multi.num_processes % multi.num_machines == 0 and multi.mixed_precision == "bf16"
    fsdp = load_config_from_file(str(CONFIGS / "fsdp_vit.yaml"))
    assert fsdp.distributed_type == DistributedType.FSDP and fsdp.mixed_precision == "bf16"
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    layer = fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert layer == "ViTLayer" and hasattr(modeling_vit, layer)  # the class FSDP wraps exists under that name
    assert "2 machine(s) x 8 process(es) = 16, this is machine 1, machine 0 at 10.0.0.1:29500" in check_config(
        str(MULTI_NODE), machine_rank=1
    )
    assert "FSDP, 1 machine(s) x 2 process(es)" in check_config(str(CONFIGS / "fsdp_vit.yaml"))
    readme = (REPO / "recipes" / "README.md").read_text()
    for name in ("multi_node.yaml", "fsdp_vit.yaml", "slurm/train.sbatch"):
        assert name in readme, name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--machine_rank", "2"], "machine_rank 2 must be from 0 to 1 with num_machines 2"),
        (["--num_processes", "3"], "num_processes 3 is not a multiple of num_machines 2; .* would start 1 per"),
        (["--main_process_ip", ""], "main_process_ip is empty"),
        (["--main_process_port", "65536"], "main_process_port is 65536"),
    ],
)
def test_the_config_check_command_refuses_what_accelerate_lets_through(flags, message, capsys):
    from fer_hf.cli import run
    from fer_hf.launch_check import LaunchError, main

    with pytest.raises(LaunchError, match=message):
        main([str(MULTI_NODE), *flags])
    assert run(main, [str(MULTI_NODE), *flags]) == 2
    assert capsys.readouterr().err.startswith(f"error: {MULTI_NODE}: ")


def test_the_sbatch_script_launches_one_accelerate_per_node_with_its_rank(tmp_path):
    """srun, scontrol and accelerate replaced by stubs: the script's quoting gives each node the right flags."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "scontrol").write_text('#!/bin/bash\nprintf "gpu-a17\\ngpu-a18\\n"\n')
    srun = '#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nfor n in 0 1; do SLURM_NODEID=$n "$@"; done\n'
    (stubs / "srun").write_text(srun)
    (stubs / "accelerate").write_text('#!/bin/bash\necho "node $SLURM_NODEID: $*"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**_clean_env(), "PATH": f"{stubs}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a[17-18]"}
    env |= {"SLURM_NNODES": "2", "GPUS_PER_NODE": "4"}
    script = REPO / "recipes" / "slurm" / "train.sbatch"
    done = subprocess.run(
        ["bash", str(script), "recipes/vit_unfreeze.yaml", "--training.num_train_epochs", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    common = (
        "--main_process_ip gpu-a17 --main_process_port 29500 --num_processes 8 -m fer_hf.train "
        "recipes/vit_unfreeze.yaml --training.num_train_epochs 2"
    )
    config = "launch --config_file recipes/accelerate_configs/multi_node.yaml --num_machines 2"
    assert done.stdout.splitlines() == [
        f"node 0: {config} --machine_rank 0 {common}",
        f"node 1: {config} --machine_rank 1 {common}",
    ]


# --- a 2-machine job on this host -------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """This process's environment without launch or SLURM variables, this checkout first on the path."""
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "MASTER_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _args(out: Path, *extra: str) -> list[str]:
    from test_train import tiny_args

    # 2 epochs of 64 faces, a checkpoint each epoch (save_total_limit 1 from smoke.yaml)
    return tiny_args(out, "--training.num_train_epochs", "2", "--training.save_strategy", "epoch", *extra)


def _finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[tuple[int, str, str]]:
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:  # a machine left waiting for its peer: end its whole process group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return results


def launch_two_machines(argv: list[str], env_extra: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Machines 0 and 1 of a 2-machine job, one process each, both on 127.0.0.1, started at the same time."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    port = _free_port()
    env = {**_clean_env(), **(env_extra or {})}
    procs = []
    for machine in (0, 1):
        cmd = [accelerate, "launch", "--config_file", str(MULTI_NODE), "--num_machines", "2"]
        cmd += ["--machine_rank", str(machine), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        cmd += ["--num_processes", "2", "--mixed_precision", "no", "--num_cpu_threads_per_process", "1"]
        procs.append(
            subprocess.Popen(
                [*cmd, __file__, *argv],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return _finish(procs)


def _digests(out: Path) -> list[str]:
    return [(out / f"digest_rank{r}.txt").read_text() for r in (0, 1)]


@pytest.fixture(scope="module")
def two_machine_run(tmp_path_factory):
    """One uncut 2-machine run (shared by the tests below: it takes a minute or two on 2 cores)."""
    root = tmp_path_factory.mktemp("two_machines")
    out = root / "run"
    results = launch_two_machines(_args(out))
    for machine, (code, _, stderr) in enumerate(results):
        assert code == 0, f"machine {machine}: {stderr[-3000:]}"
    return root, out, results


def test_two_machines_train_like_two_processes_on_one(two_machine_run, tmp_path):
    from fer_hf.runlock import LOCK_FILE

    root, out, results = two_machine_run
    # Both "machines" share this host's disk, as the nodes of a cluster share a filesystem: only rank 0 writes
    # the run, so there is one run folder with one card, one metrics.json and no lock left behind.
    assert [p.name for p in root.iterdir()] == ["run"]
    assert [p.relative_to(out) for p in out.rglob("README.md")] == [Path("README.md")]
    assert [p.relative_to(out) for p in out.rglob("metrics.json")] == [Path("metrics.json")]
    assert not (out / LOCK_FILE).exists()
    assert sum(stdout.count("validation: accuracy") for _, stdout, _ in results) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # The effective batch is 16 per process x 2: 64 faces are 2 steps an epoch, 4 in 2 epochs.
    (checkpoint,) = out.glob("checkpoint-*")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 2 * math.ceil(64 / (16 * 2))
    digests = _digests(out)
    assert digests[0] == digests[1]  # the machines' model copies stayed bit-identical
    # The same recipe and seed as 2 processes of one machine (cpu_ddp.yaml) ends with the same weights.
    single = tmp_path / "single"
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"), "--num_cpu_threads_per_process", "1"]
    cmd += ["--main_process_port", str(_free_port())]
    done = subprocess.run(
        [*cmd, __file__, *_args(single)], cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _digests(single) == digests
    from safetensors.torch import load_file

    ours, theirs = load_file(out / "model.safetensors"), load_file(single / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)


def test_a_machine_killed_after_the_first_checkpoint_resumes_to_the_same_weights(two_machine_run, tmp_path):
    _, uncut, _ = two_machine_run
    out = tmp_path / "run"
    # Machine 1's process is SIGKILLed at the end of step 3, in epoch 2: step 3's gradient all-reduce needed
    # machine 0, so machine 0 had finished writing the epoch-1 checkpoint (checkpoint-2). Machine 0 then fails
    # on its next collective with the peer gone.
    results = launch_two_machines(_args(out), {KILL_ENV: "1:3"})
    assert [code for code, _, _ in results] != [0, 0]
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "metrics.json").exists()
    results = launch_two_machines(_args(out, "--run.resume", "true"))
    for machine, (code, _, stderr) in enumerate(results):
        assert code == 0, f"machine {machine}: {stderr[-3000:]}"
    assert _digests(out) == _digests(uncut)
    assert json.loads((out / "metrics.json").read_text())["train_sessions"] == 2


def _entry(argv: list[str]) -> None:
    from test_train import DigestCallback
    from transformers import TrainerCallback

    from fer_hf.recipe_parser import load_recipe
    from fer_hf.train import finish_run
    from fer_hf.training.run import train_from_recipe

    class KillAtStep(TrainerCallback):
        def __init__(self, rank: int, step: int):
            self.rank, self.step = rank, step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step and int(os.environ.get("RANK", "0")) == self.rank:
                os.kill(os.getpid(), signal.SIGKILL)  # as a machine that goes down: no cleanup

    callbacks = [DigestCallback()]
    if os.environ.get(KILL_ENV):
        rank, step = map(int, os.environ[KILL_ENV].split(":"))
        callbacks.append(KillAtStep(rank, step))
    recipe = load_recipe(argv[0], argv[1:])
    finish_run(recipe, train_from_recipe(recipe, extra_callbacks=callbacks))  # as python -m fer_hf.train ends


if __name__ == "__main__":
    _entry(sys.argv[1:])
