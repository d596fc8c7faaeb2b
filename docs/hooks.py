"""MkDocs hooks for the cnnlab site: the pages made from the code and the repository's own files (command-line
reference from the parsers, recipes, the README as the guide, the benchmarks and security notes, the lessons'
index), the lessons executed once and handed to mkdocs-jupyter with their outputs, and their solution cells folded.

Executed lessons come from `lessons/execute.py`: an up-to-date copy in $CNNLAB_EXECUTED_LESSONS (the tests set
it) or build/lessons is reused; otherwise the lesson runs now.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# Relative links of the repository's Markdown files -> where those pages are on the site.
LINKS = {"docs/ARCHITECTURE.md": "ARCHITECTURE.md", "benchmarks/README.md": "benchmarks.md",
         "SECURITY.md": "security.md", "lessons/": "lessons/index.md", "lessons/README.md": "lessons/index.md",
         "docs/callbacks.md": "callbacks.md"}
HELP_COLUMNS = "100"  # argparse wraps help text to the terminal; the reference is generated at one fixed width


def load_execute():
    """lessons/execute.py as a module (it is a script beside the notebooks, not part of the package)."""
    if "cnnlab_lessons_execute" in sys.modules:
        return sys.modules["cnnlab_lessons_execute"]
    spec = importlib.util.spec_from_file_location("cnnlab_lessons_execute", ROOT / "lessons" / "execute.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@event_priority(100)  # before mkdocs-jupyter turns the notebooks into pages
def on_files(files: Files, config) -> Files:
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    execute = load_execute()
    out = Path(os.environ.get("CNNLAB_EXECUTED_LESSONS") or execute.DEFAULT_OUT).resolve()
    if out.name != "lessons":  # the copies stand in for docs/lessons/*.ipynb: src_dir/lessons/NAME
        raise SystemExit(f"CNNLAB_EXECUTED_LESSONS must name a folder called lessons, got {out}")
    for lesson in execute.lesson_paths():
        execute.execute(lesson, out, reuse=True)
        # A plain File on disk (mkdocs-jupyter cannot read generated ones), as if it were docs/lessons/NAME.
        files.append(File(f"lessons/{lesson.name}", src_dir=str(out.parent), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_content(html: str, page, config, files) -> str:
    """Fold each lesson's solution cell (tagged `solution`) into a <details> block, as Jupyter collapses it."""
    if not page.file.src_uri.endswith(".ipynb") or "celltag_solution" not in html:
        return html
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for cell in soup.select("div.celltag_solution"):
        details = soup.new_tag("details", attrs={"class": "solution"})
        summary = soup.new_tag("summary")
        summary.string = "Solutions (click to show)"
        cell.wrap(details)
        details.insert(0, summary)
    return str(soup)


def on_post_page(output: str, page, config) -> str:
    """No MathJax loader (nbconvert adds one, from a CDN or empty): the lessons use no TeX, the site works offline."""
    return re.sub(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", "", output, flags=re.DOTALL)


def generated_pages() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return {
        "cli.md": cli_reference(),
        "recipes.md": recipes_page(),
        "guide.md": rewrite_links(readme.replace("# cnnlab\n", "# Guide\n", 1)),
        "benchmarks.md": rewrite_links((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")),
        "security.md": rewrite_links((ROOT / "SECURITY.md").read_text(encoding="utf-8")),
        "lessons/index.md": lessons_index(),
    }


def rewrite_links(markdown: str) -> str:
    for source, target in LINKS.items():
        markdown = markdown.replace(f"]({source})", f"]({target})")
    return markdown


@contextlib.contextmanager
def help_width() -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps its subcommands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def cli_reference() -> str:
    """Every command's `--help`, generated from the parsers the `cnnlab` command itself builds."""
    sys.path.insert(0, str(ROOT / "src"))  # the checkout's cnnlab, even where another one is installed
    from cnnlab.cli.main import build_parser

    with help_width():
        parser = build_parser()
        parts = ["# Command line", "",
                 "Every command of `cnnlab` with its `--help`, generated from the parsers when the site is built.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in subcommands(parser):
            parts += [f"## cnnlab {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
            for action_name, action in subcommands(sub):
                parts += [f"### cnnlab {name} {action_name}", "", "```text", action.format_help().rstrip(), "```",
                          ""]
    return "\n".join(parts)


def recipes_page() -> str:
    """What each recipe is (from the registry) and what it reaches (the README's measured table)."""
    sys.path.insert(0, str(ROOT / "src"))
    from cnnlab.training.launch import settings_to_argv
    from cnnlab.training.recipes import list_recipes

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Recipes and what they reach")
    end = min(i for i in (readme.find("\n## ", start + 1), readme.find("\n### ", start + 1)) if i > 0)
    measured = readme[start:end].replace("### Recipes and what they reach", "## What they reach", 1)
    rows = ["| recipe | what it is | as flags |", "| --- | --- | --- |"]
    for r in list_recipes():
        flags = " ".join(settings_to_argv(r.settings)).replace("|", "\\|")
        rows.append(f"| `{r.name}` | {r.description} | `{flags}` |")
    return "\n".join(["# Recipes", "", "Named training presets: `cnnlab train --recipe NAME`, options you add override "
                      "it; `cnnlab recipes NAME` prints one as flags you can paste.", "", *rows, "",
                      rewrite_links(measured)])


def lessons_index() -> str:
    """The lessons in order, each with what the learner will be able to do (read from the notebooks)."""
    execute = load_execute()
    parts = ["# Learn CNNs with cnnlab", "",
             "Eight lessons that walk the classic tutorials' path: each idea worked out by hand, checked against "
             "PyTorch, then used on a real model you train. Each runs top to bottom in a minute or two on a "
             "laptop CPU; the pages below show the outputs of the run that built this site, and every number "
             "their text states is checked in CI (a figure quoted from elsewhere is underlined: hover over it for "
             "its source). Where a lesson has a widget to move, this page shows the picture it starts with.", "",
             "Run them yourself: `pip install 'cnnlab[lessons]'`, then `cnnlab lessons open 1` (it copies the "
             "notebook into `./cnnlab-lessons` and starts JupyterLab). The data they need is the bundled digits, "
             "scikit-learn's sample photos, and MNIST and Fashion-MNIST, downloaded the first time if they are "
             "not in `$CNNLAB_DATA`.", ""]
    for path in execute.lesson_paths():
        text = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
        title = text.splitlines()[0].lstrip("# ").strip()
        goals = text.split("**You will be able to**", 1)[1].split("\n\n", 2)[1]
        parts += [f"## [{title}]({path.name})", "", goals.strip(), ""]
    readme = (ROOT / "lessons" / "README.md").read_text(encoding="utf-8")
    parts.append(readme[readme.index("## Every number checked"):].replace("## Widgets", "## The widgets"))
    return "\n".join(parts)
