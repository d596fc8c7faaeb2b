"""Files from others never run code; a run never ends up stuck, mixed or lost; bad settings get one line."""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.config import FIELDS, add_arguments, explicit_settings, resolve

QUIET = {"quiet": True}
SMALL = dict(recipe="digits", subset=300, seed=1, **QUIET)


def weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")["state_dict"]


def same_weights(a: Path, b: Path, which: str = "last") -> bool:
    wa, wb = weights(a, which), weights(b, which)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- files from elsewhere never run code


class Exploit:
    """Unpickling this runs `touch MARKER` (what a crafted CIFAR batch would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar_folder(root: Path, poisoned: dict | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
        with open(folder / name, "wb") as f:
            pickle.dump((poisoned or {}).get(name, batch), f, protocol=2)  # protocol 2, like the real files
    return folder


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _cifar_folder(tmp_path / "data", {"data_batch_3": {"data": Exploit(marker), "labels": []}})
    with pytest.raises(CnnlabError) as err:
        get_dataset("cifar10", "train", tmp_path / "data", val_size=0)
    assert not marker.exists()
    message = str(err.value)
    assert str(folder / "data_batch_3") in message and "system" in message and "\n" not in message
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    assert not marker.exists()


def test_a_cifar_batch_of_the_wrong_shape_is_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = {"data": np.zeros((10, 1000), np.uint8), "labels": list(range(10))}
    folder = _cifar_folder(tmp_path, {"test_batch": bad})
    with pytest.raises(CnnlabError, match=r"test_batch is not a CIFAR batch file: 'data' is uint8 of shape \(10, 1000\)"):
        get_dataset("cifar10", "test", tmp_path)
    assert (folder / "test_batch").exists()


def _malicious_torchscript(run_dir: Path, path: Path, marker: Path) -> None:
    """A TorchScript file with cnnlab's export metadata whose forward creates a file of its choosing."""
    from cnnlab.apps.export.metadata import KEY, ExportMetadata

    class Evil(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.target = target

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            planted = torch.from_file(self.target, shared=True, size=8)  # creates a file of its choosing
            return torch.zeros(x.shape[0], 10) + planted.sum() * 0

    meta = ExportMetadata.from_run(cnnlab.load_run(run_dir))
    torch.jit.save(torch.jit.script(Evil(str(marker))), str(path), _extra_files={f"{KEY}.json": meta.to_json()})


def test_torchscript_from_elsewhere_runs_only_when_trusted(digits_run: Path, tmp_path: Path, capsys) -> None:
    marker, image = tmp_path / "marker", tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 200).save(image)
    received = tmp_path / "model.pt"  # a name that does not say what it is
    _malicious_torchscript(digits_run, received, marker)
    fake_run = tmp_path / "run"
    (fake_run / "checkpoints").mkdir(parents=True)
    (fake_run / "checkpoints" / "best.pt").write_bytes(received.read_bytes())
    for target in (received, fake_run):
        capsys.readouterr()
        assert main(["predict", str(target), str(image)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "TorchScript" in err and "Traceback" not in err, err
        assert not marker.exists()
    assert main(["predict", str(received), str(image), "--trust-code"]) == 0  # the user's explicit choice
    assert marker.exists() and "runs its code" in capsys.readouterr().err


# ---------------------------------------------------------------- settings: one line, the valid range in it


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "nan", "--lr must be > 0"), ("--lr", "-1", "--lr must be > 0"), ("--lr", "0", "--lr must be > 0"),
    ("--lr", "inf", "--lr must be > 0"), ("--momentum", "5", "--momentum must be >= 0 and < 1"),
    ("--label-smoothing", "5", "--label-smoothing must be >= 0 and < 1"), ("--epochs", "-3", "--epochs must be >= 1"),
    ("--batch-size", "0", "--batch-size must be >= 1"), ("--max-time", "-1", "--max-time must be >= 0"),
    ("--weight-decay", "-1", "--weight-decay must be >= 0"), ("--val-size", "2.5", "--val-size must be a fraction"),
    ("--target-acc", "150", "--target-acc must be > 0 and <= 100"), ("--gamma", "0", "--gamma must be > 0"),
])
def test_each_invalid_setting_is_one_line_before_any_work(flag: str, value: str, expected: str, tmp_path: Path,
                                                          capsys) -> None:
    assert main(["train", flag, value, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


NUMBERS = [name for name, f in FIELDS.items() if f.metadata["valid"] is not None]


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(NUMBERS), value=st.floats(allow_nan=True, allow_infinity=True, width=32)
       | st.integers(min_value=-10**20, max_value=10**20))
def test_any_number_is_accepted_when_in_range_else_refused_in_one_line(name: str, value: float) -> None:
    """Through the Python API, and through the command line's parser (the same value as the user would type it)."""
    valid = FIELDS[name].metadata["valid"]
    is_int = "int" in str(FIELDS[name].type).split(" | ")  # int, or int | None ("auto": chosen from the data)
    whole = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    expected_ok = value in valid and (whole or not is_int)
    try:
        resolve({name: value})
    except CnnlabError as exc:
        assert not expected_ok, f"{name}={value!r} refused: {exc}"
        assert "\n" not in str(exc) and (name in str(exc) or name.replace("_", "-") in str(exc))
    else:
        assert expected_ok, f"{name}={value!r} accepted"
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    try:
        resolve(explicit_settings(parser.parse_args([f"--{name.replace('_', '-')}={value!r}"])))
    except (CnnlabError, argparse.ArgumentError) as exc:
        assert not expected_ok or (is_int and not isinstance(value, int)), f"--{name}={value!r} refused: {exc}"
    else:
        assert expected_ok, f"--{name}={value!r} accepted"


def test_the_nan_message_says_what_is_known_and_never_suggests_a_larger_rate(tmp_path: Path) -> None:
    from cnnlab.training.engine import NonFiniteLoss

    with pytest.raises(NonFiniteLoss) as err:
        cnnlab.train(model="lenet", optimizer="sgd", lr=1e8, schedule="constant", epochs=1, out=str(tmp_path / "r"),
                     **QUIET)
    message = str(err.value)
    assert "at step" in message and "learning rate of 1e+08 at that step" in message and "--lr 1e+07" in message
    assert "the loss before it was" in message and "larger" not in message


# ---------------------------------------------------------------- a run never ends up stuck, mixed or lost


def test_a_run_killed_during_its_final_test_is_completed_by_resume(tmp_path: Path) -> None:
    run = cnnlab.train(epochs=2, out=str(tmp_path / "r"), **SMALL)
    expected = dict(run.results)
    for name in ("results.json", "curves.png"):  # what a kill during the final test leaves unwritten
        (tmp_path / "r" / name).unlink()
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["status"] == "completed"
    before = weights(tmp_path / "r")
    resumed = cnnlab.train(resume=str(tmp_path / "r"), quiet=True)
    assert resumed.results["test_acc"] == expected["test_acc"] and resumed.results["epochs_run"] == 2
    assert (tmp_path / "r" / "curves.png").is_file() and [r["epoch"] for r in resumed.history] == [1, 2]
    after = weights(tmp_path / "r")
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained again
    with pytest.raises(CnnlabError, match="already finished"):  # now nothing is left to do
        cnnlab.train(resume=str(tmp_path / "r"), quiet=True)


def test_a_run_stopped_by_target_acc_resumes_to_the_same_end(tmp_path: Path) -> None:
    early = dict(epochs=12, target_acc=0.6, **SMALL)
    straight = cnnlab.train(out=str(tmp_path / "a"), **early)
    assert straight.results["epochs_run"] < 12
    cnnlab.train(out=str(tmp_path / "b"), **early)
    (tmp_path / "b" / "results.json").unlink()  # killed during its final test
    resumed = cnnlab.train(resume=str(tmp_path / "b"), quiet=True)
    assert resumed.results["epochs_run"] == straight.results["epochs_run"]
    assert same_weights(tmp_path / "a", tmp_path / "b") and same_weights(tmp_path / "a", tmp_path / "b", "best")


def test_an_existing_run_folder_is_never_overwritten_silently(tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    cnnlab.train(epochs=2, out=out, **SMALL)
    with pytest.raises(CnnlabError, match=r"already holds a run: continue it with --resume .* or replace it with "
                                          r"--overwrite"):
        cnnlab.train(epochs=1, out=out, **SMALL)
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2  # untouched
    cnnlab.train(epochs=1, out=out, overwrite=True, **SMALL)
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1  # replaced, not mixed


@pytest.mark.slow
def test_a_run_folder_in_use_is_refused_naming_the_process(tmp_path: Path) -> None:
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from cnnlab.training.rundir import RunLock
        folder = Path({str(tmp_path / "r")!r})
        folder.mkdir()
        held = RunLock(folder).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(CnnlabError, match=rf"in use by another cnnlab process \(pid {proc.pid} on "):
            cnnlab.train(epochs=1, out=str(tmp_path / "r"), **SMALL)
    finally:
        proc.kill()
        proc.wait()
    cnnlab.train(epochs=1, out=str(tmp_path / "r"), **SMALL)  # a killed holder lets go at once


# One thread in every process involved: float sums on one and on two threads need not agree to the last bit.
RESUMABLE = dict(model="mnist_cnn", dataset="digits", epochs=2, batch_size=128, augment="translate=1,cutout=4",
                 subset=600, seed=5, threads=1, **QUIET)


@pytest.mark.slow
def test_kill_9_mid_epoch_loses_at_most_one_checkpoint_interval_and_resumes_bit_identical(tmp_path: Path) -> None:
    straight = cnnlab.train(out=str(tmp_path / "a"), **RESUMABLE)
    killer = textwrap.dedent(f"""
        import os, signal, cnnlab
        class Kill(cnnlab.Callback):
            def on_step_end(self, step, loss):
                if step == 6:  # half-way through epoch 2 (4 steps per epoch)
                    os.kill(os.getpid(), signal.SIGKILL)
        cnnlab.train(out={str(tmp_path / "b")!r}, checkpoint_every=1e-9, callbacks=[Kill()], **{RESUMABLE!r})
    """)
    done = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["loader"]["batch"], ckpt["step"]) == (1, 1, 5)  # the step before the kill
    resumed = cnnlab.train(resume=str(tmp_path / "b"), quiet=True)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert resumed.results["test_acc"] == straight.results["test_acc"]


def test_a_corrupt_best_checkpoint_falls_back_to_last_saying_so(digits_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])  # truncated
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"{best} is corrupt or not a checkpoint" in captured.err and "using" in captured.err
    assert json.loads(captured.out)["test_acc"] > 0.5
    (run / "checkpoints" / "last.pt").write_bytes(b"\0" * 4096)  # zeroed: nothing to fall back to
    assert main(["eval", str(run)]) == 2
    assert "is corrupt or not a checkpoint" in capsys.readouterr().err


def test_orphan_temp_files_of_a_killed_write_are_cleaned_on_the_next_write(tmp_path: Path) -> None:
    from cnnlab.files import STALE_AFTER_S, atomic_write_text

    orphan = tmp_path / ".results.json.abc123.tmp"  # what a kill during a write leaves
    fresh = tmp_path / ".results.json.def456.tmp"  # another writer's, right now
    orphan.write_text("half")
    fresh.write_text("half")
    old = time.time() - 2 * STALE_AFTER_S
    os.utime(orphan, (old, old))
    atomic_write_text("{}", tmp_path / "results.json")
    assert not orphan.exists() and fresh.exists() and (tmp_path / "results.json").read_text() == "{}"


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import errno

    from cnnlab.training import record

    real, calls = record.save_checkpoint, []

    def flaky(state, path):
        calls.append(path)
        if len(calls) == 3:  # epoch 1: last.pt and best.pt; then epoch 2's last.pt fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(state, path)

    monkeypatch.setattr(record, "save_checkpoint", flaky)
    with pytest.raises(CnnlabError) as err:
        cnnlab.train(epochs=3, checkpoint_every=0, out=str(tmp_path / "r"), **SMALL)
    message = str(err.value)
    assert "No space left on device" in message and "is intact" in message and "--resume" in message
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_eval_refuses_data_unlike_the_checkpoints(digits_run: Path, data_dir: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["eval", str(digits_run), "--dataset", "fashion-mnist", "--data-dir", str(data_dir)]) == 2
    assert "classes" in capsys.readouterr().err
    config = digits_run / "config.json"
    saved = config.read_text()
    try:
        config.write_text(saved.replace('"dataset": "digits"', '"dataset": "fashion-mnist"'))  # edited by hand
        assert main(["eval", str(digits_run), "--json"]) == 0  # the checkpoint says digits: evaluated on digits
        assert json.loads(capsys.readouterr().out)["dataset"] == "digits"
        config.write_text("{not json")
        assert main(["eval", str(digits_run), "--json"]) == 0
    finally:
        config.write_text(saved)


# ---------------------------------------------------------------- images as users have them


def test_a_phone_photo_is_read_upright_everywhere(tmp_path: Path) -> None:
    """EXIF orientation 6: stored landscape, shown (and meant) portrait."""
    from PIL import Image

    from cnnlab.data.images import load_image

    stored = np.zeros((10, 20, 3), np.uint8)  # 10 rows x 20 columns, left half white
    stored[:, :10] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "phone.jpg", channels=3)
    assert upright.shape == (3, 20, 10)  # portrait, as the phone showed it
    assert upright[:, :8].float().mean() > 200 and upright[:, 12:].float().mean() < 50  # the white half is on top


def test_broken_links_and_lonely_classes_are_reported(tmp_path: Path, capfd) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for cls, n in (("a", 6), ("b", 6), ("c", 1)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (8, 8), 40 * i).save(root / cls / f"{i}.png")
    (root / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "b" / "loop.png").symlink_to(root / "b" / "loop.png")  # a link to itself
    (root / "b" / "up").symlink_to(root)  # a folder link back up: not followed, no endless walk
    get_dataset(f"folder:{root}", "train", image_size=(8, 8))
    err = capfd.readouterr().err
    assert "gone.png: no such file" in err and "loop.png" in err
    assert "class 'c' has one image" in err


def test_a_huge_local_photo_opens_while_the_server_keeps_its_limit(tmp_path: Path) -> None:
    from PIL import Image

    from cnnlab.data.images import BadImageError, open_image

    big = tmp_path / "big.png"
    Image.new("L", (10000, 9500), 128).save(big)  # 95 megapixels: over Pillow's decompression-bomb warning
    assert open_image(big).size == (10000, 9500)
    with pytest.raises(BadImageError, match="over the limit|decompression bomb"):
        open_image(big.read_bytes(), max_pixels=25_000_000)


def test_a_subset_smaller_than_the_classes_warns(tmp_path: Path, capfd) -> None:
    cnnlab.train(recipe="digits", epochs=1, subset=5, out=str(tmp_path / "r"), quiet=True)
    assert "--subset 5 is smaller than the 10 classes" in capfd.readouterr().err


def test_metadata_from_elsewhere_is_checked_field_by_field(digits_run: Path, tmp_path: Path) -> None:
    from cnnlab.apps.export.metadata import ExportMetadata
    from cnnlab.training.checkpoint import save_checkpoint

    good = json.loads(ExportMetadata.from_run(cnnlab.load_run(digits_run)).to_json())
    assert good["format"] == "cnnlab.export"  # files exported by earlier versions stay readable
    assert ExportMetadata.from_json(json.dumps(good), "m.onnx").classes == tuple(str(i) for i in range(10))
    for field, value, complaint in [("classes", [1, 2], "classes.0"), ("input_size", [3, -5, 28], "input_size.1"),
                                    ("pipeline", {**good["pipeline"], "std": [0.0]}, "pipeline.std.0")]:
        with pytest.raises(CnnlabError, match=rf"m.onnx: unusable cnnlab metadata: {complaint}"):
            ExportMetadata.from_json(json.dumps({**good, field: value}), "m.onnx")
    # A received run whose checkpoint says odd things is refused in one line, naming the file and the field.
    ckpt = load_checkpoint(digits_run / "checkpoints" / "best.pt")
    run = tmp_path / "received"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint({**ckpt, "classes": "0123456789"}, run / "checkpoints" / "best.pt")
    with pytest.raises(CnnlabError, match=r"best.pt is not a usable cnnlab checkpoint: classes"):
        cnnlab.load_run(run).predict_proba(torch.zeros(1, 8, 8))
