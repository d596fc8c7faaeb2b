"""Several processes: torchrun and `cnnlab train --nproc`, 2 ranks with gloo on loopback, on the CPU.

Each multi-process job costs ~10-25 s of start-up on a loaded 2-core machine, so the suite starts two: one that
trains to the end (shared by the tests below it) and one whose rank 1 is killed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import SignalAt

import cnnlab
from cnnlab.cli.main import build_parser, main
from cnnlab.data import BatchLoader, Pipeline, get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models.weights import weights_digest
from cnnlab.training.checkpoint import load_checkpoint, resume_position
from cnnlab.training.config import explicit_settings
from cnnlab.training.distributed import cpu_cores
from cnnlab.training.launch import launch, settings_to_argv, torchrun_args
from cnnlab.training.schedule import lr_at

# No dropout, no augmentation: 2 ranks x 32 images then see exactly the batches of 1 process x 64 images.
SETTINGS = dict(recipe="digits", epochs=3, batch_size=32, seed=3)
JOB_TIMEOUT = 240  # seconds: generous, the machine is shared

# Imported by every Python process of the job (PYTHONPATH): ranks other than 0 report any attempt to open a file
# for writing or to create a folder outside $TMPDIR (a private scratch folder: `import torch` probes it) and
# /dev/null.
# The attempt is printed, not only raised, since some callers swallow OSError.
WRITE_GUARD = textwrap.dedent('''
    import builtins, io, os, sys
    if os.environ.get("RANK", "0") != "0":
        _open, _os_open, _mkdir = builtins.open, os.open, os.mkdir
        _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
        _SCRATCH = os.path.join(os.path.realpath(os.environ["TMPDIR"]), "")

        def _deny(path):
            real = os.path.realpath(os.fsdecode(path))
            if os.path.join(real, "").startswith(_SCRATCH) or real == os.devnull:
                return
            sys.__stderr__.write(f"WRITE BY RANK {os.environ['RANK']}: {path}\\n")
            sys.__stderr__.flush()
            raise PermissionError(f"rank {os.environ['RANK']} may not write {path}")

        def _guarded_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
                _deny(file)
            return _open(file, mode, *args, **kwargs)

        def _guarded_os_open(path, flags, *args, **kwargs):
            if flags & _WRITE_FLAGS:
                _deny(path)
            return _os_open(path, flags, *args, **kwargs)

        def _guarded_mkdir(path, *args, **kwargs):
            if os.path.isdir(path):  # an existing folder: nothing is written (libraries make sure of caches)
                raise FileExistsError(17, "File exists", path)
            _deny(path)
            return _mkdir(path, *args, **kwargs)

        builtins.open = io.open = _guarded_open
        os.open, os.mkdir = _guarded_os_open, _guarded_mkdir
''')


@pytest.fixture
def one_thread():
    """In-process runs use one thread (quicker on a loaded 2-core machine); the suite's count is restored after."""
    before = torch.get_num_threads()
    yield {"threads": 1}
    torch.set_num_threads(before)


def _job_env(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`torchrun --nproc-per-node 2 -m cnnlab train` run unchanged in an empty folder, rank 1 under a write guard."""
    work = tmp_path_factory.mktemp("job")
    guard = tmp_path_factory.mktemp("guard")
    scratch = tmp_path_factory.mktemp("scratch")
    (guard / "sitecustomize.py").write_text(WRITE_GUARD)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "cnnlab", "train", *settings_to_argv(SETTINGS)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=JOB_TIMEOUT,
                          env=_job_env(PYTHONPATH=str(guard), TMPDIR=str(scratch)))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    runs = sorted((work / "runs").iterdir())
    return {"work": work, "runs": runs, "stdout": proc.stdout, "output": output,
            "seconds": time.perf_counter() - t0}


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(two_rank_run: dict, tmp_path: Path,
                                                                one_thread: dict) -> None:
    (run_dir,) = two_rank_run["runs"]
    two = json.loads((run_dir / "results.json").read_text())
    two_rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    one = cnnlab.train(**{**SETTINGS, "batch_size": 64}, out=str(tmp_path / "one"), quiet=True, **one_thread)
    assert two["status"] == "completed" and [r["epoch"] for r in two_rows] == [1, 2, 3]
    assert two["test_acc"] > 0.85, two["test_acc"]
    assert abs(two["test_acc"] - one.results["test_acc"]) <= 0.02, (two["test_acc"], one.results["test_acc"])
    for a, b in zip(two_rows, one.history):  # the same arithmetic up to the order of float sums
        assert abs(a["train_loss"] - b["train_loss"]) < 0.01, (a, b)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2
    assert config["resolved"]["steps_per_epoch"] == one.checkpoint["distributed"]["steps_per_epoch"]


@pytest.mark.slow
def test_only_rank_0_writes_and_prints(two_rank_run: dict) -> None:
    work, runs = two_rank_run["work"], two_rank_run["runs"]
    assert "WRITE BY RANK" not in two_rank_run["output"], two_rank_run["output"][-3000:]
    assert [p.name for p in work.iterdir()] == ["runs"]  # the one timestamped folder rank 0 made, nothing else
    (run_dir,) = runs
    assert re.fullmatch(r"lenet-digits-\d{8}-\d{6}", run_dir.name)
    # The lock file of the run folder stays or goes with filelock's version: not part of the run.
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name != ".lock")
    assert files == ["checkpoints", "checkpoints/best.pt", "checkpoints/last.pt", "config.json", "curves.png",
                     "metrics.jsonl", "results.json"]
    out = two_rank_run["stdout"]
    threads = max(1, cpu_cores() // 2)
    start = [line for line in out.splitlines() if line.startswith("training lenet")]
    assert len(start) == 1 and f"cpu x 2 processes, {threads} CPU thread" in start[0], out
    assert out.count("test accuracy") == 1 and out.count("epoch   1/3") == 1
    assert f"run folder: {Path('runs') / run_dir.name}" in out


@pytest.mark.slow
def test_final_weights_are_identical_on_every_rank(two_rank_run: dict) -> None:
    (run_dir,) = two_rank_run["runs"]
    digests = json.loads((run_dir / "results.json").read_text())["weights_sha1_by_rank"]
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]
    assert len(digests) == 2 and digests[0] == digests[1] == weights_digest(final)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(two_rank_run: dict, tmp_path: Path,
                                                         one_thread: dict) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(two_rank_run["runs"][0], run_dir)
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["distributed"]["world_size"] == 2 and saved["epoch"] == 3
    run = cnnlab.train(resume=str(run_dir), epochs=4, quiet=True, **one_thread)
    assert run.status == "completed" and [r["epoch"] for r in run.history] == [1, 2, 3, 4]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    steps = ckpt["distributed"]["steps_per_epoch"]  # one process, 32 images a step: twice the steps of two
    assert ckpt["distributed"]["world_size"] == 1 and steps == 2 * saved["distributed"]["steps_per_epoch"]
    assert ckpt["epoch"] == 4 and ckpt["step"] == 4 * steps  # continued at epoch 4 in this run's steps
    cfg = ckpt["config"]
    expected_lr = lr_at(4 * steps - 1, base_lr=cfg["lr"], schedule=cfg["schedule"], total_steps=4 * steps,
                        warmup_steps=0, step_size=max(1, round(cfg["step_epochs"] * steps)), gamma=cfg["gamma"])
    assert run.history[-1]["lr"] == pytest.approx(expected_lr, rel=1e-9)  # the schedule ends where it should
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"] and run.results["test_acc"] > 0.85


def test_ranks_see_interleaved_shares_and_resume_maps_positions(tmp_path: Path) -> None:
    data = get_dataset("digits", "train")
    pipe = Pipeline.build(1, (1, 8, 8), (0.0,), (1.0,))
    loaders = [BatchLoader(data, 32, pipe, shuffle=True, drop_last=True, seed=1, rank=r, world_size=2)
               for r in (0, 1)]
    one = BatchLoader(data, 32, pipe, shuffle=True, drop_last=True, seed=1)
    perm = one.order()
    for b in (1, 5):  # b steps of 2 ranks x 32 images = the permutation's first b x 64 images
        seen = torch.cat([torch.cat(ld.index_batches()[:b]) for ld in loaders])
        assert set(seen.tolist()) == set(perm[: b * 64].tolist())
    # 2 ranks x 32, stopped after 5 of 20 steps of epoch 2; resumed by 1 process x 32 (40 steps an epoch):
    ckpt = {"step": 25, "loader": {"epoch": 1, "batch": 5},
            "distributed": {"world_size": 2, "global_batch": 64, "steps_per_epoch": 20}}
    assert resume_position(ckpt, steps_per_epoch=40, global_batch=32) == (50, {"epoch": 1, "batch": 10})
    # ... and by 4 ranks x 32 (10 steps an epoch): 320 images seen, so batch 2 (256 images) is where to go on.
    assert resume_position(ckpt, steps_per_epoch=10, global_batch=128) == (12, {"epoch": 1, "batch": 2})
    same = resume_position(ckpt, steps_per_epoch=20, global_batch=64)
    assert same == (25, {"epoch": 1, "batch": 5})  # the same world size: exactly as saved
    old = {"step": 7, "loader": {"epoch": 0, "batch": 7}}  # written before cnnlab recorded the world size
    assert resume_position(old, steps_per_epoch=40, global_batch=32) == (7, {"epoch": 0, "batch": 7})


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_an_error_naming_it(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--epochs", "10000", "--json",
           "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_job_env(CNNLAB_TEST_JOB=mark))
    try:
        for line in proc.stdout:  # rank 0 prints one JSON line per epoch: training is under way
            if line.startswith('{"event": "epoch"'):
                break
        pid = _rank_pid(mark, rank=1)
        os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=90)  # the other rank must not wait for the dead one for ever
        output = proc.stdout.read()
    finally:
        proc.kill()
    assert code != 0
    assert f"error: the training job failed: rank 1 (pid {pid}, local rank 1) was killed by SIGKILL" in output, \
        output[-3000:]


def _rank_pid(mark: str, rank: int) -> int:
    """The pid of the process with CNNLAB_TEST_JOB=mark and RANK=rank in its environment."""
    wanted = {f"CNNLAB_TEST_JOB={mark}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if wanted <= env:
                return int(entry.name)
    raise AssertionError(f"no process of rank {rank} found")


def test_sync_batchnorm_is_refused_on_the_cpu_with_a_clear_error(capsys) -> None:
    # What the message relies on: this torch's SyncBatchNorm does not synchronize CPU tensors (gloo group of one).
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            torch.nn.SyncBatchNorm(4).train()(torch.randn(2, 4, 3, 3))
    finally:
        dist.destroy_process_group()
    # Refused before any process starts (each rank refuses it too, under plain torchrun).
    assert main(["train", "--nproc", "2", "--sync-bn", "--device", "cpu", "--model", "fastnet"]) == 2
    assert "--sync-bn needs CUDA GPUs" in capsys.readouterr().err


def test_settings_reach_torchrun_unchanged() -> None:
    settings = {"model": "resnet9", "lr": 0.1 + 0.2, "normalize": False, "model_kwargs": {"width": 8},
                "target_acc": 0.99, "augment": "translate=2,flip", "nproc": 2, "out": "-odd name"}
    cmd = torchrun_args(2, {k: v for k, v in settings.items() if k != "nproc"})
    assert cmd[:5] == ["--standalone", "--nproc-per-node=2", "-m", "cnnlab", "train"]
    args = build_parser().parse_args(cmd[4:])
    assert explicit_settings(args) == {k: v for k, v in settings.items() if k != "nproc"}


def test_nproc_under_torchrun_must_match_its_processes(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(CnnlabError, match="torchrun started 4 processes"):
        launch({"nproc": 2, "epochs": 1})


def test_sigterm_stops_like_ctrl_c_and_saves(tmp_path: Path, one_thread: dict) -> None:
    # torchrun passes SIGTERM (and Ctrl-C) on to every rank; each stops between steps and rank 0 saves.
    run = cnnlab.train(model="lenet", epochs=2, subset=300, out=str(tmp_path / "r"), quiet=True,
                       callbacks=[SignalAt(3, signal.SIGTERM)],
                       **one_thread)
    assert run.status == "interrupted"
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["status"] == "interrupted" and ckpt["step"] == 3 and ckpt["loader"]["batch"] == 3
