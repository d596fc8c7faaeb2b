"""A fresh clone on a fresh machine: the README's test command is what CI runs, and the tests find their data,
photos and browser by themselves, or say in one line what to put where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, TEST_DATASETS, data_places, find_test_data
from test_browser import find_chromium

README = (ROOT / "README.md").read_text()


def readme_section(heading: str) -> str:
    """A section of the README, from its heading to the next heading of the same level."""
    start = README.index(f"\n{heading}\n")
    end = README.find("\n## ", start + len(heading) + 2)
    return README[start:end if end > 0 else len(README)]


def readme_test_command() -> str:
    quickstart = readme_section("## Quickstart")
    lines = [line.split("#")[0].strip() for line in quickstart.splitlines() if "'.[test]'" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readmes_test_command_and_sets_nothing() -> None:
    command = readme_test_command()
    assert command == "pip install -e '.[test]' && scripts/test"
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert command in ci  # word for word
    assert ci.index(command) > ci.index("python3 -m venv .venv-ci")  # in the fresh environment
    assert not [line for line in ci if "CNNLAB_DATA" in line or line.startswith("export")]
    assert (ROOT / "scripts/test").stat().st_mode & 0o111  # executable, as the command calls it


def test_the_readme_says_how_to_get_cpu_only_torch_and_what_the_tests_need() -> None:
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme_section("## Install")
    section = readme_section("## Running the tests")
    for needed in ("MNIST", "../shared/data", "skimage.data", "Chromium", "minutes", "scripts/test --fast"):
        assert needed in section, needed
    assert re.search(r"The whole suite: [\d,]+ tests in \d+ min \d+ s in `\.ci/run`", section)  # how long it takes


def test_the_readme_is_read_in_five_minutes_and_its_links_lead_somewhere() -> None:
    assert len(README.splitlines()) <= 150
    assert README.index("## Install") < README.index("## Quickstart") < README.index("## Examples")
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert len(links) > 20  # into the site: getting started, every how-to, the reference
    assert not [link for link in links if not (ROOT / link).exists()]
    assert re.search(r"!\[[^\]]+\]\(docs/images/[\w.-]+\.png\)", README)  # one picture


def _fake_dataset_one(root: Path, name: str) -> None:
    raw = root / TEST_DATASETS[name] / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(b"")  # presence is all the search looks at


def _fake_dataset(root: Path) -> None:
    for name in TEST_DATASETS:
        _fake_dataset_one(root, name)


def test_test_data_is_looked_for_in_order_then_fetched_into_the_cache(tmp_path: Path) -> None:
    env, checkout, cache = tmp_path / "env", tmp_path / "clone" / "cnnlab", tmp_path / "cache"
    shared = checkout.parent / "shared" / "data"
    places = data_places(str(env), checkout, cache)
    assert [p for _, p in places] == [env, shared, cache]
    assert [p for _, p in data_places(None, checkout, cache)] == [shared, cache]  # no variable: beside, cache

    def no_fetch(name: str, where: Path) -> None:
        raise AssertionError("nothing to download")

    _fake_dataset(shared)
    assert find_test_data(places, cache, no_fetch) == shared.resolve()
    _fake_dataset(env)
    assert find_test_data(places, cache, no_fetch) == env.resolve()  # $CNNLAB_DATA first
    fetched = []
    assert find_test_data(data_places(None, tmp_path / "x" / "y", cache), cache,
                          lambda name, where: (fetched.append(name), _fake_dataset_one(where, name))) == cache
    assert fetched == list(TEST_DATASETS)  # online: each fetched once, into the cache


def test_offline_with_the_data_nowhere_is_one_line_saying_what_to_put_where(tmp_path: Path) -> None:
    def offline(name: str, where: Path) -> None:  # as torchvision's downloader says it, over several lines
        raise OSError("Tried http://example.invalid/mnist/, got:\n[Errno -3] Temporary failure in name resolution\n.")

    places = data_places(None, tmp_path / "clone" / "cnnlab", tmp_path / "cache")
    with pytest.raises(RuntimeError) as info:
        find_test_data(places, tmp_path / "cache", offline)
    message = str(info.value)
    assert "\n" not in message
    for part in ("MNIST/raw/", "FashionMNIST/raw/", str(tmp_path / "clone" / "shared" / "data"),
                 str(tmp_path / "cache"), "CNNLAB_DATA", "name resolution"):
        assert part in message, part


def test_sample_photos_come_from_scikit_image(photos_dir: Path) -> None:
    from PIL import Image

    sizes = {p.name: Image.open(p).size for p in sorted(photos_dir.iterdir())}
    assert sizes == {"astronaut.png": (512, 512), "camera.png": (512, 512), "chelsea.png": (451, 300),
                     "coffee.png": (600, 400), "rocket.jpg": (640, 427)}


def test_chromium_is_found_wherever_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "chromium-browser"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert find_chromium() == str(fake)  # another name, another folder
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bundled = tmp_path / "ms-playwright" / "chrome"
    assert find_chromium(str(bundled)) is None
    bundled.parent.mkdir()
    bundled.write_text("")
    assert find_chromium(str(bundled)) == str(bundled)  # Playwright's own download
    monkeypatch.setenv("CHROMIUM", "/opt/somewhere/chrome")
    assert find_chromium(str(bundled)) == "/opt/somewhere/chrome"
