"""Folder datasets kept on disk between runs: the scan (each file's header) and the decoded tensors are reused while
no file changed, and an added, changed or removed file is noticed; a first run decodes each file once; bad input
gets one clear line."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import folder, get_dataset, images, listed_once, loader, scan
from cnnlab.data.loader import worker_processes
from cnnlab.data.images import image_to_tensor, open_image
from cnnlab.errors import CnnlabError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder for this test, and no scan or decode kept in this process: each call is a new run."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    fresh_process(monkeypatch)
    return tmp_path / "cache"


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process keeps (as a new `cnnlab train` would start), but not the disk cache."""
    monkeypatch.setattr(scan, "_MEMO", {})
    monkeypatch.setattr(folder, "_DECODED", {})


def make_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls, base in (("dark", 40), ("light", 210)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(base, 15, (10, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    (root / "dark" / "broken.png").write_bytes(b"not a png at all")
    return root


def count_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Record every file whose header the scan reads, and every file the decoder decodes."""
    headers: list[str] = []
    decodes: list[str] = []
    for module, name, seen in ((images, "peek_image", headers), (folder, "open_image", decodes)):
        real = getattr(module, name)

        def counting(path, *a, real=real, seen=seen, **kw):
            seen.append(Path(path).name)
            return real(path, *a, **kw)

        monkeypatch.setattr(module, name, counting)
    return headers, decodes


def all_splits(root: Path) -> dict:
    return {s: get_dataset(f"folder:{root}", s, image_size=(8, 8)) for s in ("train", "val", "test")}


def test_a_rerun_decodes_nothing_and_still_lists_bad_files(tmp_path: Path, cache: Path, monkeypatch, capfd) -> None:
    root = make_folder(tmp_path / "imgs")
    first = all_splits(root)
    assert "broken.png" in capfd.readouterr().err
    fresh_process(monkeypatch)
    headers, decodes = count_reads(monkeypatch)
    again = all_splits(root)
    assert headers == [] and decodes == []  # neither the scan nor the decoder opened a file
    assert f"{root / 'dark' / 'broken.png'}: not an image file" in capfd.readouterr().err  # listed on every run
    for s in first:
        assert torch.equal(first[s].images, again[s].images) and torch.equal(first[s].targets, again[s].targets)
    assert first["train"].info.mean == again["train"].info.mean


def test_a_first_run_decodes_each_file_once_and_a_truncated_one_is_left_out_alike_every_run(
        tmp_path: Path, cache: Path, monkeypatch, capfd) -> None:
    root = make_folder(tmp_path / "imgs", per_class=10)
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(root / "light" / "cut.jpg", quality=95)
    whole = (root / "light" / "cut.jpg").read_bytes()
    (root / "light" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])  # its header reads; its pixels do not
    headers, decodes = count_reads(monkeypatch)
    first = all_splits(root)
    images = sorted(p.name for p in root.rglob("*.*") if p.name != "broken.png")  # the files with a header
    assert sorted(headers) == sorted(images + ["broken.png"]) and sorted(decodes) == images  # once each
    err = capfd.readouterr().err
    assert f"{root / 'light' / 'cut.jpg'}: corrupt or truncated" in err and "broken.png: not an image" in err
    assert sum(len(d) for d in first.values()) == 20  # the 20 good images, each in one split
    fresh_process(monkeypatch)
    again = all_splits(root)
    assert sorted(decodes) == images and "cut.jpg: corrupt or truncated" in capfd.readouterr().err  # not decoded
    for s in first:
        assert torch.equal(first[s].images, again[s].images) and torch.equal(first[s].targets, again[s].targets)


def test_changed_added_and_removed_files_are_noticed(tmp_path: Path, cache: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs")
    before = scan.scan_folder(root)
    opened, _ = count_reads(monkeypatch)
    # Changed in place (same name and folder, so no folder's mtime changes), in this same process.
    Image.new("L", (5, 7), 255).save(root / "dark" / "0.png")
    st = os.stat(root / "dark" / "0.png")
    os.utime(root / "dark" / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # whatever the clock's grain
    changed = scan.scan_folder(root)
    assert opened == ["0.png"]  # only the changed file is read again
    assert changed.sizes["train"][changed.files["train"].index(str(root / "dark" / "0.png"))] == (7, 5)
    Image.new("L", (9, 9), 200).save(root / "light" / "new.png")
    fresh_process(monkeypatch)  # and in a new process
    added = scan.scan_folder(root)
    assert opened == ["0.png", "new.png"] and str(root / "light" / "new.png") in added.files["train"]
    (root / "light" / "1.png").unlink()
    removed = scan.scan_folder(root)
    assert opened == ["0.png", "new.png"] and str(root / "light" / "1.png") not in removed.files["train"]
    assert len(removed.files["train"]) == len(before.files["train"])
    assert "light/1.png" not in scan.load_records(root)  # the cache forgets it too


def test_changed_files_change_the_decoded_images(tmp_path: Path, cache: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs")
    assert not (all_splits(root)["test"].images == 123).all()
    for p in root.glob("*/[0-9].png"):
        Image.new("L", (12, 10), 123).save(p)
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh_process(monkeypatch)
    assert all((d.images == 123).all() for d in all_splits(root).values())  # decoded afresh, not the old tensors


def test_a_damaged_cache_is_rebuilt(tmp_path: Path, cache: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs")
    first = all_splits(root)
    opened, _ = count_reads(monkeypatch)
    wrong = '{"format": 2, "root": "%s", "files": {"dark/0.png": [1, 2, "x", 4]}}' % root
    for garbage, tensors in ((wrong, "wrong shape"), ("{oops", "truncated"), ("", "truncated")):
        scan.records_path(root).write_text(garbage)
        for pt in cache.rglob("folder-*.pt"):
            if tensors == "truncated":
                pt.write_bytes(pt.read_bytes()[:100])
            else:
                torch.save({"images": torch.zeros(3, 1, 8, 8, dtype=torch.uint8)}, pt)
        fresh_process(monkeypatch)
        opened.clear()
        again = all_splits(root)
        assert "0.png" in opened and "broken.png" in opened  # scanned afresh
        for s in first:
            assert torch.equal(first[s].images, again[s].images)
        assert len(scan.load_records(root)) == 13  # and written back whole


def test_a_cache_folder_that_cannot_be_written_costs_only_speed(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "file" / "cache"))
    fresh_process(monkeypatch)
    root = make_folder(tmp_path / "imgs")
    assert len(all_splits(root)["train"]) > 0
    fresh_process(monkeypatch)
    assert len(all_splits(root)["test"]) > 0


def test_original_sizes_are_recorded_upright(tmp_path: Path, cache: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    found = scan.scan_folder(root)
    assert set(found.sizes["train"]) == {(10, 12)} and len(found.sizes["train"]) == len(found.files["train"])



def test_the_scan_reads_headers_alone_and_turns_sizes_as_exif_says(tmp_path: Path) -> None:
    from cnnlab.data.images import read_header

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 12 wide and 10 high, shown turned a quarter: 10 wide, 12 high
    for ext in ("png", "jpg"):
        Image.new("RGB", (12, 10), (200, 10, 10)).save(tmp_path / f"turned.{ext}", exif=exif.tobytes())
        Image.new("L", (12, 10), 9).save(tmp_path / f"plain.{ext}")
        assert read_header(tmp_path / f"turned.{ext}") == (False, 12, 10)
        assert read_header(tmp_path / f"plain.{ext}") == (True, 10, 12)
        # The pixels are not decoded: a file cut after its header still reads (it fails when decoded, said then).
        noise = np.random.default_rng(0).integers(0, 256, (80, 96), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / f"noise.{ext}")
        whole = (tmp_path / f"noise.{ext}").read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(whole[: len(whole) * 2 // 3])
        assert read_header(tmp_path / f"cut.{ext}") == (True, 80, 96)


@pytest.mark.parametrize("pays", [0.0, float("inf")], ids=["threads", "one thread"])
def test_a_folder_decodes_alike_in_threads_or_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     pays: float) -> None:
    # Threads pay for photos, one thread for small files (benchmarks/README.md): the same tensor and the same bad
    # files either way, in chunks that do not divide the folder.
    monkeypatch.setattr(folder, "CHUNK", 3)
    monkeypatch.setattr(loader, "THREADS_PAY_S", pays)
    rng = np.random.default_rng(0)
    files = []
    for i in range(10):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(files[-1])
    Path(files[4]).write_bytes(Path(files[4]).read_bytes()[:60])  # cut inside its pixels
    got = folder._decode_all(files, 1, (6, 5), {})
    assert got["bad"].tolist() == [4] and "truncated" in got["reasons"][0]
    for i, f in enumerate(files):
        if i != 4:
            assert torch.equal(got["images"][i], image_to_tensor(open_image(f), 1, (6, 5)))


def count_listings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record each split folder the scan lists."""
    listed: list[Path] = []
    real = scan.list_split

    def counting(root: Path, folder: Path, classes: tuple[str, ...]):
        listed.append(folder)
        return real(root, folder, classes)

    monkeypatch.setattr(scan, "list_split", counting)
    return listed


def test_a_run_lists_its_folder_once_and_its_splits_see_the_same_files(tmp_path: Path, cache: Path,
                                                                       monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs", per_class=10)
    listed = count_listings(monkeypatch)
    with listed_once():
        first = scan.scan_folder(root)
        Image.new("L", (12, 10), 7).save(root / "light" / "late.png")  # added during the run: not in its splits
        splits = all_splits(root)
        assert scan.scan_folder(root) is first and len(listed) == 1
    assert sum(len(d) for d in splits.values()) == 20
    assert str(root / "light" / "late.png") in scan.scan_folder(root).files["train"]  # outside a run: listed afresh
    assert len(listed) == 2


def test_cnnlab_train_lists_a_folder_once(tmp_path: Path, cache: Path, monkeypatch) -> None:
    import cnnlab

    root = make_folder(tmp_path / "imgs", per_class=12)
    listed = count_listings(monkeypatch)
    run = cnnlab.train(dataset=f"folder:{root}", epochs=1, out=str(tmp_path / "run"), quiet=True)
    assert run.status == "completed" and len(listed) == 1  # the automatic choices and the three splits: one listing


def mixed_folder(root: Path) -> Path:
    """Small gray and colour PNGs, a JPEG small enough to keep but large enough for a reduced decode at 8x8, a
    palette PNG (not kept: another mode), a larger PNG (not kept), one cut in its pixels and one turned by EXIF."""
    rng = np.random.default_rng(3)
    exif = Image.Exif()
    exif[0x0112] = 6
    for cls, n in (("a", 5), ("b", 5)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(root / cls / f"gray{i}.png")
        Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(root / cls / "colour.png")
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / cls / "photo.jpg")
        Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).convert("P").save(root / cls / "pal.png")
        Image.fromarray(rng.integers(0, 256, (90, 80), dtype=np.uint8)).save(root / cls / "large.png")
        Image.fromarray(rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)).save(root / cls / "turned.png",
                                                                                   exif=exif.tobytes())
    whole = (root / "b" / "gray0.png").read_bytes()
    (root / "b" / "gray0.png").write_bytes(whole[:60])  # its header reads, its pixels do not
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_a_first_run_opens_each_small_file_once_and_decodes_it_as_a_second_open_would(
        tmp_path: Path, cache: Path, monkeypatch, capfd, channels: int) -> None:
    root = mixed_folder(tmp_path / "imgs")
    headers, decodes = count_reads(monkeypatch)
    with listed_once():
        kept = {s: get_dataset(f"folder:{root}", s, image_size=(8, 8), channels=channels) for s in
                ("train", "val", "test")}
        assert not scan.scan_folder(root).kept  # the decode took what the scan kept
    # Each file's header once; a second open only for what a scan does not keep: larger, palette, a JPEG that
    # decodes at a reduced scale, and the cut file (kept by none: its pixels fail, and it is said once decoded).
    assert sorted(headers) == sorted(p.name for p in root.rglob("*.*"))
    assert sorted(decodes) == sorted(["gray0.png", *[n for n in ("large.png", "pal.png", "photo.jpg") for _ in "ab"]])
    assert "gray0.png: corrupt or truncated" in capfd.readouterr().err
    folder_images = {s: d.images for s, d in kept.items()}
    monkeypatch.undo()
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "other-cache"))
    fresh_process(monkeypatch)
    opened = {s: get_dataset(f"folder:{root}", s, image_size=(8, 8), channels=channels) for s in
              ("train", "val", "test")}  # outside a run: nothing kept, each file decoded from its own open
    for s in kept:
        assert torch.equal(folder_images[s], opened[s].images) and torch.equal(kept[s].targets, opened[s].targets)


def test_what_a_scan_keeps_is_dropped_when_the_run_ends(tmp_path: Path, cache: Path, monkeypatch) -> None:
    root = mixed_folder(tmp_path / "imgs")
    with listed_once():
        found = scan.scan_folder(root)
        assert len(found.kept) == 2 * 8 - 1 and all(isinstance(k, str) for k in found.kept)  # not the cut file
    assert not found.kept
    fresh_process(monkeypatch)
    with listed_once():
        streamed = get_dataset(f"folder:{root}", "train", image_size=(8, 8), stream=True)
        assert streamed.images is None and not scan.scan_folder(root).kept  # not held while the folder streams


def test_a_scan_leaves_nothing_per_file_for_the_garbage_collector(tmp_path: Path, cache: Path) -> None:
    # A Path object or a PIL image per file, alive for a whole run, made every collection walk them: the first run of
    # MNIST as PNGs spent 3.8 of its 14.7 s in the collector (benchmarks/README.md, issue 29).
    import gc

    rng = np.random.default_rng(0)
    for name, n in (("warm-up", 5), ("imgs", 500)):
        for cls in ("a", "b"):
            (tmp_path / name / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / name / cls / f"{i}.png")
    with listed_once():
        scan.scan_folder(tmp_path / "warm-up")  # what a first scan creates once (imports, pools) is not counted
        gc.collect()
        before = len(gc.get_objects())
        found = scan.scan_folder(tmp_path / "imgs")
        gc.collect()
        during = len(gc.get_objects())
        assert len(found.files["train"]) == len(found.kept) == 1000
    assert during - before < 100  # a few objects for the scan, none for each of its 1,000 files and their pixels


def small_pngs(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(5)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (9, 11), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "bad.png").write_bytes(b"not an image")
    return root


def counting_processes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], object]:
    """A maker of worker processes (the command's fork_pool) that records each pool's size; any Python-bound rest is
    long enough to pay for one."""
    from cnnlab.cli import processes

    made: list[int] = []
    real = processes.fork_pool

    def counting(workers: int):
        made.append(workers)
        return real(workers)

    monkeypatch.setattr(processes, "fork_pool", counting)
    monkeypatch.setattr(loader, "PROCESSES_PAY_S", 0.0)
    monkeypatch.setattr(scan, "CHUNK", 16)
    return made, counting


def test_a_first_scan_reads_in_worker_processes_only_in_a_block_that_allows_them(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    root = small_pngs(tmp_path / "imgs", per_class=60)
    made, start = counting_processes(monkeypatch)
    found = {}
    for how in ("here", "forked"):
        monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / f"cache-{how}"))  # a first scan each time
        fresh_process(monkeypatch)
        with worker_processes(start, 2) if how == "forked" else nullcontext(), listed_once():
            s = scan.scan_folder(root)
            found[how] = (s.files, s.targets, s.sizes, s.gray, s.skipped, dict(s.kept))
        assert made == ([] if how == "here" else [2])  # the library alone forks nothing
    (files, targets, sizes, gray, skipped, kept), forked = found["here"], found["forked"]
    assert forked[:5] == (files, targets, sizes, gray, skipped) and len(kept) == 120
    assert forked[5].keys() == kept.keys() and all(np.array_equal(forked[5][k][0], kept[k][0]) for k in kept)
    assert skipped == [(root / "b" / "bad.png", "not an image file (or a format Pillow cannot read)")]
    assert scan.records_path(root).is_file()


def test_cnnlab_train_reads_a_first_scan_in_worker_processes(tmp_path: Path, cache: Path, monkeypatch) -> None:
    from cnnlab.cli.main import main

    root = small_pngs(tmp_path / "imgs", per_class=60)
    made, _ = counting_processes(monkeypatch)
    assert main(["train", "--dataset", f"folder:{root}", "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    cores = loader.decode_threads()
    assert made == ([cores] if cores > 1 else []) and (tmp_path / "run" / "results.json").is_file()


PARENT = os.getpid()


def read_or_die(paths: list[str]) -> list[str]:
    """Reads here; dies in a worker process, as one killed for memory would."""
    if os.getpid() != PARENT:
        os._exit(3)
    return paths


def test_a_worker_process_that_dies_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setattr(loader, "PROCESSES_PAY_S", 0.0)
    calls = [([f"{i}.png"] * 4,) for i in range(8)]
    from cnnlab.cli.processes import fork_pool

    stopped = pytest.raises(CnnlabError, match="worker process reading the files stopped")
    with worker_processes(fork_pool, 2), stopped as exc:
        list(loader.map_in_order(read_or_die, calls, 32, processes=True))
    assert "\n" not in str(exc.value)
    assert [r for r in loader.map_in_order(read_or_die, calls, 32, processes=True)] == [c[0] for c in calls]


# ---------------------------------------------------------------- bad input: one line, nothing lost


def test_a_folder_where_no_image_decodes(tmp_path: Path, cache: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(CnnlabError, match="no readable image in .*6 file") as exc:
        get_dataset(f"folder:{tmp_path}", "train")
    assert "\n" not in str(exc.value) and "0.jpg" in str(exc.value)


def test_classes_of_one_image(tmp_path: Path, cache: Path, capfd) -> None:
    for cls in ("a", "b"):
        (tmp_path / "two" / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 9).save(tmp_path / "two" / cls / "0.png")
    with pytest.raises(CnnlabError, match="2 readable images: too few to hold out") as exc:
        get_dataset(f"folder:{tmp_path / 'two'}", "train")
    assert "\n" not in str(exc.value)
    assert "2 classes have one image each" in capfd.readouterr().err
    for cls in ("a", "b", "c"):
        (tmp_path / "three" / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 9).save(tmp_path / "three" / cls / "0.png")
    splits = {s: get_dataset(f"folder:{tmp_path / 'three'}", s, image_size=(8, 8)) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 0, 1]  # every image used; none twice
    assert "3 classes have one image each" in capfd.readouterr().err
