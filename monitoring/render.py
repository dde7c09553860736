"""Draws the shipped dashboard from a Prometheus's data with matplotlib (no Grafana): one plot per
panel, each query run through Prometheus's query_range API. Used by tests/integration/
test_prometheus.py with AUTOGIT_DASHBOARD_PNG=docs/operations/dashboard.png."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "charts/autogit/files/autogit-dashboard.json"


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), "") or "''", template)


def draw(get: Callable[..., Any], start: float, end: float, target: Path, rewrite: Callable[[str], str] = lambda e: e) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p.get("targets")]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.6 * rows), squeeze=False)
    step = max(1.0, (end - start) / 300)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=9)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for t in panel["targets"]:
            answer = get("/api/v1/query_range", query=rewrite(t["expr"]), start=str(start), end=str(end), step=str(step))
            for series in answer["data"]["result"]:
                xs = [float(v[0]) - start for v in series["values"]]
                ys = [float(v[1]) for v in series["values"]]
                ax.plot(xs, ys, label=_legend(t.get("legendFormat", ""), series["metric"]), linewidth=1.2)
        ax.set_ylabel(unit, fontsize=7)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncol=3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("AutoGit: CI queue and runners (seconds since the test began; drawn from a real Prometheus)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(target, dpi=80)
    plt.close(fig)
