"""One self-contained HTML report: figures embedded as PNG, the numbers beside them."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from aeserve.atomic import write_text_atomic
from aeserve.evaluation import auroc, average_precision, rates_at
from aeserve.serve.plots import PlotData, render_png_bytes

__all__ = ["build_report"]


def _figures(data: PlotData) -> list[str]:
    table = data.model.encoding is not None  # typed columns: no numeric rows to draw beside their reconstructions
    return ["energy", *(["roc"] if data.has_both_classes else []), "latent",
            *([] if table else ["reconstructions"]), "training"]


def build_report(data: PlotData, out: str | Path, source: str) -> dict:
    """Write the report to ``out``; return the figures it states."""
    manifest = data.model.bundle.manifest
    facts = {"bundle": str(data.model.bundle.path), "data": source, "kind": manifest.kind,
             "rows scored": f"{len(data.rows):,}", "energy": manifest.energy.formula,
             "threshold": f"{data.model.threshold:.6g} ({manifest.threshold.describe()})",
             "flagged": f"{float((data.energies > data.model.threshold).mean()):.2%}",
             "backend": data.model.backend.describe()}
    numbers = {}
    if data.has_both_classes:
        numbers["auroc"] = auroc(data.energies[data.labels == 0], data.energies[data.labels == 1])
        numbers["average_precision"] = average_precision(data.energies, data.labels)
        numbers.update(rates_at(data.energies, data.labels, data.model.threshold))
        facts.update({"AUROC": f"{numbers['auroc']:.4f}", "average precision": f"{numbers['average_precision']:.4f}",
                      "false-positive rate at threshold": f"{numbers['false_positive_rate']:.2%}",
                      "true-positive rate at threshold": f"{numbers['true_positive_rate']:.2%}"})
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    figures = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(render_png_bytes(name, data)).decode()}"><figcaption>{name}</figcaption></figure>'
        for name in _figures(data))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aeserve report: {html.escape(manifest.name)}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}
th{{text-align:left;padding-right:1em;vertical-align:top}}figure{{margin:2em 0}}img{{max-width:100%}}
figcaption{{color:#666}}</style></head>
<body><h1>aeserve report: {html.escape(manifest.name)}</h1>
<table>{rows}</table>
{figures}
</body></html>
"""
    write_text_atomic(out, page)
    return numbers
