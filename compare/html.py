"""``report.html``: the report's content as one self-contained page, with plots.

The Markdown report is converted to HTML and the plots are embedded as PNG data URIs,
so the file needs no network and no other file at view time.
"""

from __future__ import annotations

import base64
import io
from typing import List

import markdown

from compare.model import PARITY
from compare.program import STAGES

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
code, pre { background: #f6f6f6; font-size: 0.85em; }
pre { padding: 0.6em; overflow-x: auto; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
"""


def figure_png(fig) -> str:
    buffer = io.BytesIO()
    # no timestamp or software tag in the file: the same data gives the same bytes
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curves(results: dict, plt):
    runs = [(engine, dtype, run) for engine, info in results["engines"].items()
            for dtype, run in info["runs"].items() if run["status"] == "ok"]
    if not runs:
        return None
    dtypes = results["dtypes"]
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(11, 3.2 * len(dtypes)), squeeze=False)
    for row, dtype in enumerate(dtypes):
        for col, (title, keys) in enumerate((("D loss (real + fake)", ("D_real", "D_fake")), ("G loss", ("G",)))):
            ax = axes[row][col]
            for i, (engine, run_dtype, run) in enumerate(runs):
                if run_dtype != dtype:
                    continue
                losses = run["losses"]
                values = [sum(v) for v in zip(*(losses[k] for k in keys))]
                ax.plot(range(1, len(values) + 1), values, label=engine, linewidth=2.5 - 0.4 * i,
                        linestyle=["-", "--", "-.", ":", (0, (1, 3))][i % 5])
            ax.set_title(f"{title}, {dtype}")
            ax.set_xlabel("canonical iteration")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parity_plot(results: dict, plt):
    from compare.parity import summarise

    rows = summarise(results["parity"], PARITY.name)
    if not rows:
        return None
    stages = [s for s in STAGES if s != "structure"]
    dtypes = results["dtypes"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 3.8), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        for engine in results["engines"]:
            points = {r["stage"]: r["judged_diff"] for r in rows if r["engine"] == engine and r["dtype"] == dtype}
            if not points:
                continue
            ys = [max(float(points.get(s, 0.0)), 1e-18) for s in stages]
            ax.semilogy(range(len(stages)), ys, marker="o", label=engine)
            tolerance = next(r["tolerance"] for r in rows if r["engine"] == engine and r["dtype"] == dtype
                             and r["stage"] != "structure")
            ax.axhline(tolerance, color=ax.lines[-1].get_color(), linestyle=":", linewidth=1)
        ax.set_xticks(range(len(stages)), stages, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"largest difference from torch, {dtype} (dotted: tolerance)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def moved_heatmap(results: dict, plt):
    import numpy as np

    observed = [r for r in results["results"] if r["status"] in ("ok", "raised") and r["changed"]]
    if not observed:
        return None
    tensors = sorted({n for r in observed for net in ("G", "D") for kind in ("params", "state")
                      for n in r["changed"][net][kind]} | {"G.bn.gamma", "D.bn.gamma"},
                     key=lambda n: (n[0] != "G", n))
    rows = list(dict.fromkeys((r["scenario"], r["variant"]) for r in observed))  # catalog order
    grid = np.zeros((len(rows), len(tensors)))
    for i, (scenario, variant) in enumerate(rows):
        records = [r for r in observed if r["scenario"] == scenario and r["variant"] == variant
                   and r["init"] == "constant"] or [r for r in observed if r["scenario"] == scenario
                                                   and r["variant"] == variant]
        for j, name in enumerate(tensors):
            moved = [name in r["changed"][name[0]]["params"] + r["changed"][name[0]]["state"] for r in records]
            grid[i, j] = sum(moved) / len(moved)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(tensors), 1.0 + 0.28 * len(rows)))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(tensors)), tensors, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [s + (f" [{v}]" if v else "") for s, v in rows], fontsize=7)
    fig.colorbar(image, ax=ax, label="share of engines where the tensor changed", shrink=0.6)
    ax.set_title("which tensors moved, per scenario (constant init)")
    fig.tight_layout()
    return fig


def render_html(results: dict, markdown_text: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: List[str] = []
    captions = {
        "loss": "Losses over the trajectory of canonical iterations, every engine overlaid: identical "
                "training shows as one line.",
        "parity": "Largest difference from PyTorch per parity stage (after the named rules), log scale.",
        "moved": "Which tensors changed in each scenario: the share of engines in which each tensor moved.",
    }
    for name, make in (("loss", loss_curves), ("parity", parity_plot), ("moved", moved_heatmap)):
        fig = make(results, plt)
        if fig is None:
            continue
        figures.append(f'<figure><img alt="{name} plot" src="data:image/png;base64,{figure_png(fig)}">'
                       f"<figcaption>{captions[name]}</figcaption></figure>")
        plt.close(fig)
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html"])
    head, sep, rest = body.partition("<h2")  # the plots go after the title and the opening lines
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>compare: PyTorch and Keras GAN semantics</title>"
            f"<style>{STYLE}</style></head><body>\n{head}<h2>Plots</h2>\n" + "\n".join(figures) + "\n"
            + sep + rest + "\n</body></html>\n")
