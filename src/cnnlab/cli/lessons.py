"""`cnnlab lessons`: the numbered Jupyter lessons; `cnnlab lessons open N [DIR]` copies one and starts Jupyter."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cnnlab.errors import CnnlabError

LESSON_NAME = re.compile(r"^(\d\d)-[a-z0-9-]+\.ipynb$")
DEFAULT_DIR = "cnnlab-lessons"
INSTALL_HINT = "pip install 'cnnlab[lessons]'"

EXAMPLES = """examples:
  cnnlab lessons                      # the lessons in order, with what each one teaches
  cnnlab lessons open 1               # copy lesson 1 into ./cnnlab-lessons and start Jupyter there
  cnnlab lessons open 3 ~/cnn-course  # ... into another folder
  cnnlab lessons open 2 --no-start    # only copy it (open it in VS Code, JupyterLab, ...)
"""


@dataclass(frozen=True)
class Lesson:
    """One lesson notebook: its number, title, one-line summary and file."""

    number: int
    title: str
    summary: str
    path: Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lessons",
        help="the Jupyter lessons, from tensors to colour images and transfer learning: list them, open one",
        description=textwrap.fill("Eight numbered Jupyter lessons that walk the classic CNN tutorials' path with "
                                  "cnnlab: each idea worked out by hand, checked against torch, then used on a model "
                                  "you train (each runs in a minute or two on a laptop CPU). Without an action, "
                                  "list them.", 100),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run_list, json=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions")
    ls = actions.add_parser("list", help="list the lessons (the default)", description="List the lessons in order.",
                            epilog="examples:\n  cnnlab lessons list\n  cnnlab lessons list --json",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)
    op = actions.add_parser(
        "open",
        help="copy a lesson into a folder and start Jupyter on it",
        description=textwrap.fill("Copy lesson N into DIR (a copy you already changed is kept, never "
                                  "overwritten) and start JupyterLab (or Jupyter Notebook) there; without Jupyter, "
                                  f"print how to install it ({INSTALL_HINT}).", 100),
        epilog="examples:\n  cnnlab lessons open 1\n  cnnlab lessons open 4 ~/cnn-course\n"
        "  cnnlab lessons open 6 --no-start",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    op.add_argument("number", type=int, metavar="N", help="the lesson's number (see `cnnlab lessons`)")
    op.add_argument("dir", nargs="?", default=DEFAULT_DIR, metavar="DIR",
                    help=f"working folder (default: ./{DEFAULT_DIR})")
    op.add_argument("--no-start", action="store_true", help="only copy the notebook, do not start Jupyter")
    op.set_defaults(func=run_open)


def run_list(args: argparse.Namespace) -> int:
    lessons = find_lessons()
    if args.json:
        print(json.dumps([{"number": x.number, "title": x.title, "summary": x.summary, "file": str(x.path)}
                          for x in lessons], indent=2))
        return 0
    for x in lessons:
        print(f"{x.number}. {x.title}\n" + textwrap.fill(x.summary, 100, initial_indent="   ", subsequent_indent="   "))
    print(f"\nopen one: cnnlab lessons open N [DIR]   (the notebooks are in {lessons[0].path.parent})")
    return 0


def run_open(args: argparse.Namespace) -> int:
    lesson = get_lesson(args.number)
    path, note = copy_lesson(lesson, Path(args.dir).expanduser())
    print(note)
    command = None if args.no_start else find_jupyter()
    if command is None:
        if not args.no_start:
            print(f"Jupyter is not installed here. Install it with the lessons extra, then open the notebook:\n"
                  f"    {INSTALL_HINT}")
        print(f"    cd {path.parent} && jupyter lab {path.name}\n"
              "(any Jupyter front end works: JupyterLab, Notebook, VS Code)")
        return 0
    print(f"starting {Path(command[0]).name} in {path.parent} (Ctrl-C twice to stop it)")
    # Started in the lesson's folder, so the runs and files a lesson writes land beside it.
    return subprocess.call([*command, path.name], cwd=path.parent)


def lesson_dirs() -> list[Path]:
    """Where lesson notebooks may be: a source checkout's lessons/, then where pip installed them."""
    dirs = [Path(__file__).resolve().parents[3] / "lessons"]  # src/cnnlab/cli/lessons.py -> the checkout
    try:
        files = metadata.distribution("cnnlab").files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:  # pyproject's data-files put them in <prefix>/share/cnnlab/lessons
        if f.parent.name == "lessons" and f.parent.parent.name == "cnnlab" and f.name.endswith(".ipynb"):
            dirs.append(Path(f.locate()).resolve().parent)
            break
    return dirs


def find_lessons(folder: Path | None = None) -> list[Lesson]:
    """The lessons in order of their number, read from the first folder that has any."""
    for d in [folder] if folder is not None else lesson_dirs():
        paths = sorted(p for p in d.glob("*.ipynb") if LESSON_NAME.match(p.name)) if d.is_dir() else []
        if paths:
            return [read_lesson(p) for p in paths]
    raise CnnlabError("cannot find the lesson notebooks: reinstall cnnlab (pip install cnnlab) or run it from a "
                      "clone of its repository, whose lessons/ folder holds them")


def get_lesson(number: int) -> Lesson:
    lessons = find_lessons()
    for x in lessons:
        if x.number == number:
            return x
    raise CnnlabError(f"there is no lesson {number}: choose {lessons[0].number}-{lessons[-1].number} "
                      "(`cnnlab lessons` lists them)")


def read_lesson(path: Path) -> Lesson:
    """Number, title and summary from the notebook's first cell: '# 1. Title', then an italic summary line."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = nb["cells"][0]
        text = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CnnlabError(f"{path} is not a readable lesson notebook ({exc}): reinstall cnnlab") from None
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in text.strip().split("\n\n")]
    heading = re.match(r"#\s+(\d+)\.\s+(.+)", paragraphs[0])
    if first.get("cell_type") != "markdown" or heading is None:
        raise CnnlabError(f"{path} does not start with a '# N. Title' heading: reinstall cnnlab")
    italic = (p for p in paragraphs[1:] if p.startswith(("*", "_")) and not p.startswith("**"))
    return Lesson(int(heading.group(1)), heading.group(2).strip(), next(italic, "").strip("*_ "), path)


def copy_lesson(lesson: Lesson, folder: Path) -> tuple[Path, str]:
    """Copy the notebook into `folder`; a copy already there is kept as it is (it may hold the learner's work)."""
    from cnnlab.files import atomic_path

    dest = folder / lesson.path.name
    if dest.exists():
        if dest.read_bytes() == lesson.path.read_bytes():
            return dest, f"lesson {lesson.number} is already in {folder}: {dest}"
        return dest, (f"kept your copy of lesson {lesson.number}, which you changed: {dest} "
                      "(delete or rename it to start over from a fresh copy)")
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(lesson.path, tmp)
    except OSError as exc:
        raise CnnlabError(f"cannot write to {folder}: {exc.strerror or exc}; choose another folder") from None
    return dest, f"copied lesson {lesson.number} ({lesson.title}) to {dest}"


def find_jupyter() -> list[str] | None:
    """The command that starts JupyterLab (else Jupyter Notebook) beside this Python, or on the PATH; None if absent."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for name in ("jupyter-lab", "jupyter-notebook"):
        exe = shutil.which(name, path=search)
        if exe:
            return [exe]
    return None
