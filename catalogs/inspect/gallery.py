"""A static HTML gallery of the top candidates: ``index.html`` plus PNGs, no server.

The gallery copies the cached images (see :mod:`catalogs.inspect.cache`) into
``OUT_DIR/img/`` and writes one self-contained page with relative links, so the folder
can be zipped, mailed or put on any web server. When the run has grades, each card
also shows the consensus (mean grade, number of graders, class).
"""

from __future__ import annotations

import html
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from catalogs.inspect.cache import read_manifest

_STYLE = """
body{margin:0;background:#111417;color:#e6e8ea;font:14px/1.4 system-ui,sans-serif}
header{padding:12px 16px;border-bottom:1px solid #2a3038}h1{font-size:18px;margin:0 0 4px}.muted{color:#98a2ad}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;padding:12px 16px}
.card{background:#1b2026;border-radius:8px;padding:8px}.row{display:grid;grid-template-columns:2fr 1fr;gap:6px}
.side{display:grid;gap:6px;align-content:start}
.strip{display:grid;grid-auto-flow:column;grid-auto-columns:1fr;gap:4px;margin-top:6px}
img{width:100%;image-rendering:pixelated;display:block;border-radius:3px;background:#000}
figure{margin:0}figcaption{font-size:11px;color:#98a2ad;text-align:center}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:6px 0 0;font-size:12.5px}
dt{color:#98a2ad}dd{margin:0;overflow-wrap:anywhere}
.rank{font-weight:700}.known{color:#f0b429;font-weight:600}.cls{font-weight:700;color:#2fbf71}
"""


def _figure(src: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}" loading="lazy">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _card(candidate: dict[str, Any], manifest: dict[str, Any], grades: pd.DataFrame | None) -> str:
    images = candidate["images"]
    side = "".join(_figure(images[kind], "Grad-CAM" if kind == "gradcam" else "occlusion") for kind in manifest["maps"])
    strip = "".join(_figure(images[f"b{b}-asinh"], band) for b, band in enumerate(manifest["bands"]))
    rows = [
        ("object", str(candidate["object_id"]), ""),
        ("score", f"{candidate['score']:.4f}", ""),
        ("flags", candidate["flag_names"], ""),
    ]
    if candidate.get("ra") is not None and candidate.get("dec") is not None:
        rows.append(("ra, dec", f"{candidate['ra']:.5f}, {candidate['dec']:.5f}", ""))
    if manifest.get("has_known_lens_column"):
        rows.append(("known lens", candidate.get("known_lens_name") or "–", "known"))
    if grades is not None and candidate["object_id"] in grades.index:
        row = grades.loc[candidate["object_id"]]
        final = row["final_class"] if isinstance(row["final_class"], str) else "none"
        rows.append(("grades", f"mean {row['mean_grade']:.2f} of {int(row['n_graders'])}, "
                               f"spread {row['grade_std']:.2f}", ""))
        rows.append(("class", final, "cls"))
    details = "".join(f"<dt>{html.escape(term)}</dt><dd class=\"{cls}\">{html.escape(value)}</dd>"
                      for term, value, cls in rows)
    rgb = manifest["rgb"]
    caption = f"R {'+'.join(rgb['R'])} · G {'+'.join(rgb['G'])} · B {'+'.join(rgb['B'])}"
    return (f'<article class="card"><div class="rank">#{int(candidate["rank"])}</div>'
            f'<div class="row">{_figure(images["rgb"], caption)}<div class="side">{side}</div></div>'
            f'<div class="strip">{strip}</div><dl>{details}</dl></article>')


def write_gallery(cache_dir: Path, out_dir: str | Path, grades: pd.DataFrame | None = None) -> Path:
    """Write ``OUT_DIR/index.html`` and ``OUT_DIR/img/*.png`` for the cached candidates.

    Args:
        cache_dir: a cache directory made by :func:`catalogs.inspect.cache.build_cache`.
        out_dir: the folder to write (created; its ``img/`` and ``index.html`` replaced).
        grades: optional consensus table (:func:`catalogs.inspect.consensus.consensus`).

    Returns:
        The path of ``index.html``.
    """
    manifest = read_manifest(cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "img").exists():
        shutil.rmtree(out / "img")
    shutil.copytree(cache_dir / "img", out / "img")
    cards = "\n".join(_card(candidate, manifest, grades) for candidate in manifest["candidates"])
    model = manifest.get("model") or {}
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    maps = ("Maps: occlusion (red = hiding these pixels lowers the lens logit, blue = raises it) and Grad-CAM."
            if manifest["maps"] else f"No interpretability maps ({manifest.get('maps_note', '')}).")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(manifest['run'])} · top {len(manifest['candidates'])} lens candidates</title>
<style>{_STYLE}</style></head><body>
<header><h1>{html.escape(manifest['run'])}: top {len(manifest['candidates'])} lens candidates</h1>
<div class="muted">model {html.escape(str(model.get('name')))} ({html.escape(str(model.get('architecture')))}) ·
colour: Lupton et al. (2004) asinh composites · single bands: asinh stretch · {html.escape(maps)} ·
made {created}</div></header>
<main>
{cards}
</main></body></html>
"""
    index = out / "index.html"
    temporary = out / ".index.html.tmp"
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, index)
    return index
