"""The study report (`caloquant run`): ``report.json`` and ONE self-contained ``report.html``
(inline CSS, PNG figures inline as base64 data URIs, no script or font from the network).

The tables are the rich tables of ``caloquant.report`` converted cell by cell (their colour
markup becomes a CSS class), so the terminal and the report show the same numbers. The figures
are the PNGs of ``validation_plots`` and ``bench_plots``.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from rich.table import Table
from rich.text import Text

from caloquant.fileio import atomic_path, write_json

COLOR_CLASSES = {"green": "ok", "red": "bad", "yellow": "warn"}


def table_data(t: Table) -> dict[str, Any]:
    """A rich table as plain data: title, columns, rows of plain text, a CSS class per cell
    (from the cell's colour markup: green ok, yellow warn, red bad) and the caption."""

    def plain(x: Any) -> tuple[str, str]:
        text = Text.from_markup(x) if isinstance(x, str) else Text(str(x))
        styles = " ".join(str(s.style) for s in text.spans)
        cls = next((c for k, c in COLOR_CLASSES.items() if re.search(rf"\b{k}\b", styles)), "")
        return text.plain, cls

    cols = [list(c.cells) for c in t.columns]
    rows, classes = [], []
    for cells in zip(*cols):
        pc = [plain(c) for c in cells]
        rows.append([p for p, _ in pc])
        classes.append([c for _, c in pc])
    return {
        "title": plain(t.title or "")[0],
        "columns": [plain(c.header)[0] for c in t.columns],
        "rows": rows,
        "classes": classes,
        "caption": plain(t.caption or "")[0],
    }


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def section(
    title: str,
    text: str = "",
    tables: list[Table | None] | None = None,
    figures: list[tuple[str, Path | None]] | None = None,
    details: list[Table | None] | None = None,
) -> dict[str, Any]:
    """A report section: ``figures`` are (caption, PNG path); ``details`` are tables shown
    folded."""
    return {
        "id": slug(title),
        "title": title,
        "text": text,
        "tables": [table_data(t) for t in tables or [] if t is not None],
        "details": [table_data(t) for t in details or [] if t is not None],
        "figures": [
            {"caption": c, "path": str(p)}
            for c, p in figures or []
            if p is not None and Path(p).exists()
        ],
    }


def report_dict(title: str, sections: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "caloquant_report": 1,
        "title": title,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **meta,
        "sections": sections,
    }


# a backslash at the end of a line joins it to the next: long lines wrapped, the HTML unchanged
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ r.title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; \
color: #1d232a; background: #fafbfc; }
header { background: #17324d; color: #fff; padding: 1.2em 2em; }
header h1 { margin: 0 0 .3em 0; font-size: 1.6em; }
header p { margin: 0; opacity: .85; }
nav { padding: .6em 2em; background: #e8edf2; font-size: .92em; position: sticky; top: 0; \
z-index: 1; }
nav a { margin-right: 1.1em; color: #17324d; text-decoration: none; white-space: nowrap; }
main { padding: 0 2em 3em 2em; max-width: 1500px; }
section { margin-top: 1.6em; padding-top: .4em; border-top: 1px solid #d6dde4; }
h2 { color: #17324d; }
table { border-collapse: collapse; margin: .8em 0 .2em 0; font-size: .86em; background: #fff; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #d6dde4; padding: .25em .55em; text-align: right; \
font-variant-numeric: tabular-nums; }
th { background: #eef2f6; }
td:first-child, th:first-child { text-align: left; }
td.ok { color: #17752f; } td.warn { color: #9a6a00; } td.bad { color: #b3261e; font-weight: 600; }
p.caption { font-size: .8em; color: #56616c; margin: .1em 0 1em 0; max-width: 1200px; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; background: #fff; border: 1px solid #d6dde4; padding: .4em; }
figure img { max-width: 560px; width: 100%; height: auto; display: block; }
figcaption { font-size: .8em; color: #56616c; max-width: 560px; }
.recommendation { font-size: 1.05em; background: #fff; border-left: 4px solid #17752f; \
padding: .8em 1.2em; max-width: 1200px; }
details summary { cursor: pointer; color: #17324d; margin-top: .6em; }
</style>
</head>
<body>
<header><h1>{{ r.title }}</h1><p>{{ r.subtitle }}</p></header>
<nav>{% for s in r.sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% macro table(t) %}<table>{% if t.title %}<caption>{{ t.title }}</caption>{% endif %}
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}{% set ri = loop.index0 %}<tr>{% for cell in row %}<td\
{% if t.classes[ri][loop.index0] %} class="{{ t.classes[ri][loop.index0] }}"{% endif %}>{{ cell }}\
</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% if t.caption %}<p class="caption">{{ t.caption }}</p>{% endif %}\
{% endmacro %}
{% for s in r.sections %}<section id="{{ s.id }}" data-section="{{ s.title }}">
<h2>{{ s.title }}</h2>
{% if s.text %}<p class="{{ 'recommendation' if s.id == 'recommendation' else '' }}">{{ s.text }}\
</p>{% endif %}
{% for t in s.tables %}{{ table(t) }}{% endfor %}
{% if s.figures %}<div class="figs">{% for f in s.figures %}<figure>\
<img alt="{{ f.caption }}" src="data:image/png;base64,{{ images[f.path] }}">\
<figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>{% endif %}
{% if s.details %}<details><summary>more tables</summary>{% for t in s.details %}{{ table(t) }}\
{% endfor %}</details>{% endif %}
</section>
{% endfor %}
</main>
<script>
// a check for readers and tests: how many figures the browser decoded
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-decoded", ok + "/" + imgs.length);
});
</script>
</body>
</html>
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document; figures are read from their PNG files and inlined."""
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    images = {
        f["path"]: base64.b64encode(Path(f["path"]).read_bytes()).decode("ascii")
        for s in report["sections"]
        for f in s["figures"]
    }
    return env.from_string(TEMPLATE).render(r=report, images=images)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.html`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    html = render_html(report)
    write_json(out / "report.json", report)
    with atomic_path(out / "report.html", suffix=".html") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out / "report.json", out / "report.html"
