"""HTML pieces shared by the self-contained pages (run report, analysis): the style sheet,
the page shell, tables and fact grids. No script, no network."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["CSS", "facts", "page", "table"]

CSS = """
:root{--ink:#1d2330;--mute:#5f6b7a;--line:#dde2e8;--bad:#c62828;--warn:#f9a825;--ok:#2e7d32;
--roll:#ef6c00;--bg:#f6f7f9}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:var(--bg);margin:0}
main{max-width:1040px;margin:0 auto;padding:24px 20px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid
var(--line);padding-bottom:4px}h3{font-size:16px;margin:0}
.sub{color:var(--mute);margin:0 0 16px;font-size:13px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;vertical-align:middle}
.ok{background:var(--ok)}.stopped,.unfinished{background:var(--roll)}.error{background:var(--bad)}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:8px;margin:0}
.facts div{background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px 10px}
.facts dt{font-size:12px;color:var(--mute)}.facts dd{margin:0;font-weight:600;word-break:break-word}
.verdict{background:#fff;border-left:4px solid var(--bad);padding:10px 14px;margin:16px 0;
border-radius:4px}.verdict.clean{border-color:var(--ok)}
.problems{background:#fff8e1;border:1px solid #ffe082;border-radius:6px;padding:8px 14px}
.problems li{font-family:ui-monospace,monospace;font-size:13px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px}
figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:var(--mute);margin-top:4px}
.card{background:#fff;border:1px solid var(--line);border-left:5px solid var(--bad);
border-radius:6px;padding:14px 18px;margin:14px 0}
.card .code{font-family:ui-monospace,monospace;color:var(--bad);font-weight:700}
.msg{margin:8px 0 10px;font-size:15px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0;font-size:14px}
.kv dt{color:var(--mute)}.kv dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
pre{background:#f3f4f6;border-radius:4px;padding:8px 10px;overflow-x:auto;font-size:13px;
margin:6px 0}
pre.src span{display:block}pre.src .hit{background:#ffebee;font-weight:600}
pre.src .n{color:var(--mute);display:inline;user-select:none}
table{border-collapse:collapse;font-size:13px;margin:6px 0;background:#fff}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}th{background:#f3f4f6}
td.bad{color:var(--bad);font-weight:700}
.fix{background:#e8f5e9;border-radius:4px;padding:8px 12px;margin:8px 0}
.did{background:#fff3e0;border-radius:4px;padding:8px 12px;margin:8px 0}
details summary{cursor:pointer;color:var(--mute);font-size:13px}
footer{color:var(--mute);font-size:12px;margin-top:40px}
"""


def page(title: str, body: Iterable[str], *, css: str = "") -> str:
    """The whole document: ``title`` in the tab, the house style plus ``css``, ``body`` parts
    (empty parts skipped) inside ``<main>``."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}{css}</style></head>"
        f"<body><main>{''.join(part for part in body if part)}</main></body></html>\n"
    )


def facts(items: Iterable[tuple[str, object]]) -> str:
    """The grid of labelled facts under a page title; ``None`` values are left out."""
    cells = "".join(
        f"<div><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>"
        for k, v in items
        if v is not None
    )
    return f"<dl class='facts'>{cells}</dl>"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: tuple = (),
    *,
    row_classes: Sequence[str] = (),
    row_ids: Sequence[str] = (),
) -> str:
    """A table of text cells (escaped); columns in ``left`` align left, non-zero NaN/Inf
    cells are marked bad; ``row_classes[i]`` / ``row_ids[i]`` (if not empty) are the class
    and the id (a link target) of row ``i``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            cls = []
            if i in left:
                cls.append("l")
            if header[i] in ("NaN", "Inf") and cell not in ("0", "—"):
                cls.append("bad")
            attr = f" class='{' '.join(cls)}'" if cls else ""
            cells.append(f"<td{attr}>{escape(cell)}</td>")
        mark = row_classes[n] if n < len(row_classes) else ""
        ident = row_ids[n] if n < len(row_ids) else ""
        attrs = (f" id='{escape(ident)}'" if ident else "") + (
            f" class='{escape(mark)}'" if mark else ""
        )
        body.append(f"<tr{attrs}>")
        body.append("".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
