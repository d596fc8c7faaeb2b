"""The documentation site: organised by what the reader wants to do, every page in it; its reference parts made from
the code and covering what they claim (every setting, endpoint, command, error message, file key); and, built, its
pages working offline in a real browser at a desktop's and a phone's size (check_site_in_browser, called by the site
build in tests/test_lessons.py)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import http.server
import importlib.util
import json
import re
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARTIFACTS = ROOT / "test-artifacts" / "site"


@functools.cache
def reference_pages():
    spec = importlib.util.spec_from_file_location("cnnlab_reference_pages", DOCS / "reference_pages.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages() -> list[str]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # mkdocs' !!python tags: not needed here
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"]

    def walk(item) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [p for v in item.values() for p in walk(v)]
        return [p for v in item for p in walk(v)]

    return walk(nav)


def section_of(nav: list, title: str) -> list[str]:
    return next(entry[title] for entry in nav if isinstance(entry, dict) and title in entry)


def test_the_site_is_organised_by_what_the_reader_wants_to_do() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    titles = [next(iter(entry)) for entry in nav]
    for section in ("Getting started", "Learn", "How-to guides", "Reference", "Troubleshooting", "Changelog",
                    "Benchmarks", "Architecture"):
        assert section in titles, section
    howto = {next(iter(e)) for e in section_of(nav, "How-to guides")}
    for page in ("Your own images", "Transfer learning", "Budgets and the learning rate", "Inspect a model",
                 "Export and serve", "Several processes and machines", "Resume and faults", "List and compare runs"):
        assert page in howto, page
    reference = {next(iter(e)) for e in section_of(nav, "Reference")}
    assert {"Command line", "Python API", "Training settings", "REST API", "File formats"} <= reference
    assert section_of(nav, "Learn")[0] == "lessons/index.md"


def test_every_page_is_in_the_navigation_and_every_marker_is_a_generated_part() -> None:
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    generated = {"benchmarks.md", "security.md", "changelog.md", "lessons/index.md"}  # made by docs/hooks.py
    listed = set(nav_pages())
    assert pages | generated <= listed | {p for p in listed if p.endswith(".ipynb")}, sorted(pages - listed)
    parts = reference_pages().GENERATED
    used = {m for p in DOCS.rglob("*.md") for m in re.findall(r"<!-- generated: ([a-z-]+) -->", p.read_text())}
    assert used == set(parts), (used ^ set(parts))


def test_the_settings_reference_has_every_field_of_trainconfig() -> None:
    from cnnlab.training.config import TrainConfig

    text = reference_pages().config_reference()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    rows = re.findall(r"^\| `(\w+)`, `--([\w-]+)`", text, re.M)
    assert [name for name, _ in rows] == fields  # each once, in the order TrainConfig declares them
    assert all(flag == name.replace("_", "-") for name, flag in rows)
    assert "## Other" not in text  # every field sits under one of the source's sections
    assert re.search(r"^\| `epochs`, `--epochs` \| `null` \| >= 1 \| yes \|", text, re.M)


def test_the_rest_reference_has_every_operation_and_parameter() -> None:
    pages = reference_pages()
    schema = pages.rest_schema()
    text = pages.rest_reference()
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            assert f"### {method.upper()} {path}" in text
            for param in op.get("parameters", []):
                assert f"`{param['name']}`" in text.split(f"### {method.upper()} {path}")[1].split("### ")[0]
    assert "`404`" in text and "image-base64" in text


def test_the_command_line_reference_has_every_command() -> None:
    from cnnlab.cli.main import COMMAND_MODULES

    pages = reference_pages()
    reference, commands = pages.cli_reference(), pages.cli_commands()
    for module in COMMAND_MODULES:
        name = module.replace("_", "-")
        assert f"## cnnlab {name}\n" in reference and f"[`cnnlab {name}`](#cnnlab-{name})" in commands


def raise_sites() -> list[tuple[str, int]]:
    """Every `raise X(` in src/ where X is CnnlabError or a class derived from it: found by reading the source
    text, not by the catalogue's own parser."""
    sources = {p: p.read_text() for p in (ROOT / "src" / "cnnlab").rglob("*.py")}
    errors = {"CnnlabError"}
    while True:
        more = {m.group(1) for text in sources.values()
                for m in re.finditer(r"^\s*class (\w+)\(([\w, .]+)\):", text, re.M)
                if {b.strip().split(".")[-1] for b in m.group(2).split(",")} & errors} - errors
        if not more:
            break
        errors |= more
    pattern = re.compile(r"\braise (?:[\w.]+\.)?(" + "|".join(sorted(errors)) + r")\(")
    return [(str(p), i + 1) for p, text in sources.items() for i, line in enumerate(text.splitlines())
            if pattern.search(line)]


def test_the_error_catalogue_has_every_message_a_user_can_meet() -> None:
    pages = reference_pages()
    sites = raise_sites()
    raised = pages.raised_errors()
    assert len(sites) == len(raised) > 300
    catalogue = pages.error_catalogue()
    for r in raised:
        assert pages.cell(pages.shown_message(r.message)) in catalogue, r
    # A message written out, with what the code fills in marked: the reader sees the fix.
    assert "`last` means the newest run in ‹runs_dir›/, and there is none" not in catalogue  # backticks made quotes
    assert "'last' means the newest run in ‹runs\\_dir›/, and there is none: train one with 'cnnlab train'" in catalogue
    assert "kernel\\[‹r›\\]\\[‹c›\\]" in catalogue  # brackets shown, not read as a link
    assert "(HTTP 404)" in catalogue and "### Web app and REST API" in catalogue


def test_the_error_catalogue_reads_messages_as_written() -> None:
    text = reference_pages().message_text
    tree = ast.parse('f"no run at {path}{_closest(path, runs_dir)}" + " -- " + name.upper()', mode="eval")
    assert text(tree.body) == "no run at ‹path›‹_closest(path, runs_dir)› -- ‹name.upper()›"


def documented_keys(heading: str) -> set[str]:
    """The `keys` in the first column of the tables under a heading of docs/reference/file-formats.md."""
    page = (DOCS / "reference" / "file-formats.md").read_text()
    part = page.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return {key for line in part.splitlines() if line.startswith("| `")
            for key in re.findall(r"`([\w.<>-]+)`", line.split(" | ")[0])}


def test_the_file_formats_page_lists_every_key_a_run_writes(digits_run: Path) -> None:
    from cnnlab.training.checkpoint import load_checkpoint
    from cnnlab.training.rundir import RUN_FILES

    config = json.loads((digits_run / "config.json").read_text())
    assert set(config) <= documented_keys("## config.json")
    assert set(config["resolved"]) <= documented_keys("## config.json")
    rows = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert set().union(*rows) <= documented_keys("## metrics.jsonl")
    results = json.loads((digits_run / "results.json").read_text())
    assert set(results) <= documented_keys("## results.json")
    assert set(load_checkpoint(digits_run / "checkpoints" / "best.pt")) <= documented_keys("## Checkpoints")
    assert set(RUN_FILES) <= documented_keys("## The run folder")


def check_site_in_browser(site: Path) -> None:
    """Serve the built site on this machine and open its pages in headless Chromium, at a desktop's and a phone's
    size: each page loads with nothing asked of the network, no script error, and a phone needs no sideways
    scrolling; the phone's menu opens the navigation."""
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, find_chromium

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test's output is its asserts, not an access log
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = ["", "getting-started/", "howto/own-images/", "howto/compare-runs/", "cli/", "reference/config/",
             "reference/rest-api/", "reference/file-formats/", "troubleshooting/", "changelog/",
             "lessons/02-cross-correlation-by-hand/"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=find_chromium(pw.chromium.executable_path), args=ARGS)
            for device, size in (("desktop", (1280, 900)), ("phone", (390, 844))):
                context = browser.new_context(viewport={"width": size[0], "height": size[1]},
                                              is_mobile=device == "phone", has_touch=device == "phone")
                page = context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
                page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
                page.on("request", lambda req: None if req.url.startswith(base) or req.url.startswith("data:")
                        else problems.append(f"asked the network: {req.url}"))
                for path in pages:
                    page.goto(base + path, wait_until="load")
                    title = page.locator("article h1").first.inner_text()
                    assert title, path
                    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    if device == "phone":
                        assert wide <= 1, f"{path}: {wide} px wider than a phone's screen"
                    page.screenshot(path=str(ARTIFACTS / f"{device}-{path.strip('/').replace('/', '-') or 'home'}.png"))
                if device == "phone":  # the navigation is a drawer behind the menu button
                    page.goto(base, wait_until="load")
                    page.locator("label.md-header__button[for=__drawer]").click()
                    page.get_by_role("link", name="Getting started").first.wait_for(state="visible")
                else:
                    page.goto(base, wait_until="load")
                    page.get_by_role("link", name="Troubleshooting").first.click()
                    page.wait_for_url(base + "troubleshooting/")
                    assert page.locator("table").count() > 10  # the error catalogue's tables
                assert not problems, problems
                context.close()
            browser.close()
    finally:
        server.shutdown()
