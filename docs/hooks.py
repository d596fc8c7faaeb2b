"""MkDocs hooks for the cnnlab site: the pages made from the repository's own files (the benchmarks, security notes
and changelog, the lessons' index), the reference parts made from the code (docs/reference_pages.py: wherever a page
says `<!-- generated: NAME -->`), the lessons executed once and handed to mkdocs-jupyter with their outputs, and their
solution cells folded.

Executed lessons come from `lessons/execute.py`: an up-to-date copy in $CNNLAB_EXECUTED_LESSONS (the tests set
it) or build/lessons is reused; otherwise the lesson runs now.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# Relative links of the repository's Markdown files -> where those pages are on the site.
LINKS = {"docs/ARCHITECTURE.md": "ARCHITECTURE.md", "benchmarks/README.md": "benchmarks.md",
         "SECURITY.md": "security.md", "lessons/": "lessons/index.md", "lessons/README.md": "lessons/index.md",
         "docs/callbacks.md": "callbacks.md", "docs/multi-node.md": "multi-node.md", "CHANGELOG.md": "changelog.md"}
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def load_module(name: str, path: Path):
    """A script beside the package (not part of it) as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def reference_pages():
    """docs/reference_pages.py: the reference parts generated from the code."""
    return load_module("cnnlab_reference_pages", ROOT / "docs" / "reference_pages.py")


def load_execute():
    """lessons/execute.py as a module (it is a script beside the notebooks, not part of the package)."""
    return load_module("cnnlab_lessons_execute", ROOT / "lessons" / "execute.py")


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


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Each `<!-- generated: NAME -->` replaced by that part, made from the code now (an unknown NAME stops the
    build: a page cannot point at a part that is not made)."""
    return fill_markers(markdown, page.file.src_uri)


def fill_markers(markdown: str, where: str = "a page") -> str:
    generated = reference_pages().GENERATED

    def made(found: re.Match) -> str:
        if found.group(1) not in generated:
            raise SystemExit(f"{where}: no generated part called {found.group(1)!r} (known: {', '.join(generated)})")
        return generated[found.group(1)]()

    return MARKER.sub(made, markdown)


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
    """Pages made whole from the repository's own files."""
    def page(path: str) -> str:
        return rewrite_links((ROOT / path).read_text(encoding="utf-8"))

    return {
        "benchmarks.md": page("benchmarks/README.md"),
        "security.md": page("SECURITY.md"),
        "changelog.md": page("CHANGELOG.md"),
        "lessons/index.md": lessons_index(),
    }


def rewrite_links(markdown: str) -> str:
    for source, target in LINKS.items():
        markdown = markdown.replace(f"]({source})", f"]({target})")
    return markdown


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
