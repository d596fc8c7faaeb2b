"""Several processes: torchrun and `cnnlab train --nproc`, 2 ranks with gloo on loopback, on the CPU; and several
machines: two torchrun agents as two nodes on 127.0.0.1 (each in its own folder and session, one process each).

Each multi-process job costs ~5-25 s of start-up on a loaded 2-core machine, so the suite starts few: one that
trains to the end (shared by the tests below it), one whose rank 1 is killed, and per torchrun form (static
--master-addr, c10d rendezvous) one two-node job that trains to the end and one that loses a node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
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
from cnnlab.training.distributed import DistEnv, Peer, cpu_cores, describe_peer_failure, peer_failure
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


def _job_env(guard: Path | None = None, **extra: str) -> dict[str, str]:
    """The suite's environment for a job; `guard`: a folder put first on PYTHONPATH (its sitecustomize runs)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1", **extra}
    if guard is not None:  # first, before the source folder a checkout may be tested from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH")) if p)
    return env


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
                          env=_job_env(guard, TMPDIR=str(scratch)))
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


# Several machines: the README's torchrun commands for two nodes, each node a torchrun agent on 127.0.0.1.

NODE_SETTINGS = dict(recipe="digits", seed=3, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_command(form: str, node: int, port: int, rdzv_id: str, train_args: list[str]) -> list[str]:
    """The README's command for one node: the static form names the node and rank 0's host, c10d a rendezvous."""
    if form == "static":
        where = ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    else:
        where = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", *where,
            "-m", "cnnlab", "train", *train_args]


class Node:
    """One torchrun agent as one machine: its own folder and session, its output read as it comes; `news` is set
    by rank 0's first epoch line (training is under way) or by the end of the output, whichever comes first."""

    def __init__(self, cmd: list[str], folder: Path, env: dict[str, str], news: threading.Event) -> None:
        folder.mkdir()
        self.folder, self.lines, self.has_rank_0 = folder, [], False
        self.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(news,), daemon=True)
        self._reader.start()

    def _read(self, news: threading.Event) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith('{"event": "epoch"'):  # only rank 0 prints
                self.has_rank_0 = True
                news.set()
        news.set()

    def output(self) -> str:
        self._reader.join(timeout=JOB_TIMEOUT)
        return "".join(self.lines)

    def kill(self) -> None:
        """The machine dies: SIGKILL to the agent's process group and its workers' (each in a session of its own)."""
        workers = [int(pid) for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
                   for pid in (task / "children").read_text().split()]
        for group in (self.proc.pid, *workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def two_nodes(form: str, folder: Path, train_args: list[str], env: dict[str, str], news: threading.Event):
    """Both nodes' torchrun started at once (as on two machines), each in folder/node0 or node1; killed after."""
    port, rdzv_id = _free_port(), uuid.uuid4().hex[:8]
    nodes = [Node(_node_command(form, n, port, rdzv_id, train_args), folder / f"node{n}", env, news) for n in (0, 1)]
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.kill()


def _rank_0_first(nodes: list[Node]) -> list[Node]:
    """[rank 0's node, the other]: the static form's node 0; with c10d, the rendezvous decides."""
    assert any(n.has_rank_0 for n in nodes), "\n".join("".join(n.lines)[-3000:] for n in nodes)
    return sorted(nodes, key=lambda n: not n.has_rank_0)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["static", "c10d"])
def test_two_nodes_train_one_run(form: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    guard, scratch = tmp_path_factory.mktemp("guard"), tmp_path_factory.mktemp("scratch")
    (guard / "sitecustomize.py").write_text(WRITE_GUARD)  # rank 1 may write nothing
    news = threading.Event()
    args = [*settings_to_argv({**NODE_SETTINGS, "epochs": 2}), "--json"]
    with two_nodes(form, tmp_path, args, _job_env(guard, TMPDIR=str(scratch)), news) as nodes:
        codes = [node.proc.wait(timeout=JOB_TIMEOUT) for node in nodes]
        outputs = [node.output() for node in nodes]
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    main, other = _rank_0_first(nodes)
    if form == "static":
        assert main is nodes[0]  # --node-rank 0 holds rank 0
    assert not any("WRITE BY RANK" in o for o in outputs), outputs
    assert list(other.folder.iterdir()) == []  # nothing on the other machine
    assert [p.name for p in main.folder.iterdir()] == ["runs"]
    (run_dir,) = (main.folder / "runs").iterdir()
    done = [json.loads(line) for o in outputs for line in o.splitlines() if line.startswith('{"event": "done"')]
    assert len(done) == 1 and done[0]["run"] == str(Path("runs") / run_dir.name), done  # one run, reported once
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs_run"] == 2 and results["test_acc"] > 0.5
    assert json.loads((run_dir / "config.json").read_text())["resolved"]["world_size"] == 2
    digests = results["weights_sha1_by_rank"]  # each rank's final weights, gathered by rank 0
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]
    assert len(digests) == 2 and digests[0] == digests[1] == weights_digest(final)


@pytest.mark.slow
@pytest.mark.parametrize("form, lose_rank_0", [("static", False), ("c10d", True)])
def test_a_lost_node_stops_the_other_with_one_line_and_the_run_resumes(form: str, lose_rank_0: bool,
                                                                       tmp_path: Path) -> None:
    news, epochs = threading.Event(), 20
    args = [*settings_to_argv({**NODE_SETTINGS, "epochs": epochs, "checkpoint_every": 0.5}), "--json"]
    with two_nodes(form, tmp_path, args, _job_env(), news) as nodes:
        assert news.wait(timeout=JOB_TIMEOUT)
        main, other = _rank_0_first(nodes)  # training is under way
        lost, survivor = (main, other) if lose_rank_0 else (other, main)
        lost.kill()
        code = survivor.proc.wait(timeout=60)  # not CNNLAB_DIST_TIMEOUT's 600 s
        output = survivor.output()
    assert code != 0
    # One process a node: rank r is on node r.
    kept, gone, host = int(lose_rank_0), int(not lose_rank_0), socket.gethostname()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-4000:]
    assert errors[0].startswith(f"error: rank {kept} (node {kept}, host {host}) lost its connection to rank {gone} "
                                f"(node {gone}, host {host}): "), errors[0]
    assert f"[rank{kept}]:" not in output, output[-4000:]  # no traceback of the rank's own
    (run_dir,) = (main.folder / "runs").iterdir()
    assert not (run_dir / "results.json").exists()
    # The survivor names the folder rank 0 made (a name with the time in it: rank 1 knows it from rank 0 alone).
    resume = re.search(r"resume from the last checkpoint with `cnnlab train --resume (\S+)`", errors[0])
    assert resume and resume.group(1) == str(Path("runs") / run_dir.name), errors[0]
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", resume.group(1), "--threads", "1"],
                          cwd=main.folder, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=_job_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs_run"] == epochs and results["test_acc"] > 0.85
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["distributed"]["world_size"] == 1 and ckpt["epoch"] == epochs


def test_a_lost_peer_is_named_as_far_as_the_error_tells(monkeypatch) -> None:
    # gloo's words, as torch raises them (RuntimeError), when a peer's process or machine dies or goes silent.
    closed = RuntimeError("[/w/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                          "[10.0.0.1]:41234. This is typically caused by a remote worker crashing.")
    reset = RuntimeError("[/w/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [10.9.9.9]:5: "
                         "Connection reset by peer.")
    silent = RuntimeError("[/w/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                          "30000ms for recv operation to complete")
    assert all(peer_failure(e) for e in (closed, reset, silent, dist.DistNetworkError("Broken pipe")))
    assert not any(peer_failure(e) for e in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                             ValueError("Connection closed by peer")))
    # Two nodes of two processes: the address gloo names is node 1's.
    peers = tuple(Peer(r, r // 2, f"host{r // 2}", f"10.0.0.{r // 2}") for r in range(4))
    env = DistEnv(rank=0, world_size=4, local_rank=0, local_world_size=2, peers=peers)
    assert describe_peer_failure(env, closed) == (
        "rank 0 (node 0, host host0) lost its connection to a process of node 1 (host host1: ranks 2, 3): that "
        "process, its machine or the network failed")
    assert "lost its connection to a process at [10.9.9.9]:5:" in describe_peer_failure(env, reset)
    # Two processes: the lost one is the other, whatever the address; a silent one is waited for as long as set.
    monkeypatch.setenv("CNNLAB_DIST_TIMEOUT", "30")
    pair = DistEnv(rank=1, world_size=2, peers=(Peer(0, 0, "a", "10.0.0.1"), Peer(1, 1, "b", "10.0.0.2")))
    assert describe_peer_failure(pair, reset).startswith(
        "rank 1 (node 1, host b) lost its connection to rank 0 (node 0, host a): ")
    assert describe_peer_failure(pair, silent) == (
        "rank 1 (node 1, host b) waited 30 s (CNNLAB_DIST_TIMEOUT) for rank 0 (node 0, host a) in vain: it stopped "
        "or stalls")


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
