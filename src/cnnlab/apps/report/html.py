"""Small HTML builders for a self-contained page: escaped text, tables, and PNGs embedded as data URIs."""

from __future__ import annotations

import html
from typing import Any, Sequence

from cnnlab.viz.style import png_data_uri

# Inline only: the report must open offline, from an e-mail attachment or a USB stick, exactly as written.
CSS = """
:root { --ink: #222; --muted: #666; --line: #e3e3e3; --accent: #1f77b4; --good: #2ca02c; --bad: #b2182b;
        --paper: #fff; --band: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--band); color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: var(--paper); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header .sub { color: var(--muted); margin: 0 0 16px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; padding: 8px 0 14px; border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; font-size: 14px; }
section { padding: 18px 0 8px; border-bottom: 1px solid var(--line); }
h2 { font-size: 20px; margin: 6px 0 8px; }
h3 { font-size: 16px; margin: 14px 0 6px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 14px; }
p.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 12px; margin: 8px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 14px; }
.card { background: var(--band); border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 13px; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 14px; margin: 6px 0 12px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { background: var(--band); font-weight: 600; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfbfc; }
td.good { color: var(--good); } td.bad { color: var(--bad); }
.bar { display: inline-block; height: 9px; background: var(--accent); border-radius: 2px; vertical-align: middle; }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
img.pixels { image-rendering: pixelated; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--accent); }
code { background: var(--band); padding: 1px 4px; border-radius: 3px; font-size: 13px; }
footer { color: var(--muted); font-size: 13px; padding-top: 16px; }
"""


def esc(value: Any) -> str:
    """Text made safe for HTML (quotes included, for attributes)."""
    return html.escape(str(value), quote=True)


def img(png: bytes, alt: str, width: int | None = None, css_class: str | None = None) -> str:
    """An embedded PNG."""
    attrs = f' width="{int(width)}"' if width else ""
    attrs += f' class="{esc(css_class)}"' if css_class else ""
    return f'<img src="{png_data_uri(png)}" alt="{esc(alt)}"{attrs}>'


def figure(png: bytes, alt: str, caption: str | None = None, width: int | None = None) -> str:
    """An embedded PNG with an optional caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{img(png, alt, width)}{cap}</figure>"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = (),
          raw: bool = False) -> str:
    """A table; columns in `right` are right-aligned (numbers); `raw` cells are trusted HTML."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="r"' if i in right else ""
        return f"<{tag}{cls}>{v if raw and tag == 'td' else esc(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    """A two-column key/value table."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline numbers: (label, value) boxes."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in items
    ) + "</div>"


def section(anchor: str, title: str, body: str, intro: str | None = None) -> str:
    """A titled section with an anchor for the navigation bar."""
    lead = f'<p class="note">{esc(intro)}</p>' if intro else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{body}</section>'


def page(title: str, header: str, nav: Sequence[tuple[str, str]], body: str, footer: str) -> str:
    """The whole document: inline CSS, no scripts, no external resources."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header>{header}</header>\n<nav>{links}</nav>\n{body}\n<footer>{footer}</footer>\n</main>\n</body>\n</html>\n"
    )
