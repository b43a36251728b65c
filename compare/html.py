"""``report.html``: the report's content as one self-contained page, with plots.

The Markdown report is converted to HTML and the plots are embedded as PNG data URIs,
so the file needs no network and no other file at view time.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Dict, List

import markdown

from compare.models.toy import PARITY
from compare.program import STAGES

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; line-height: 1.4; }
main { max-width: 1100px; margin: 0 auto; padding: 0 1em 2em; }
nav.toc { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid #ddd;
          padding: 0.4em 1em; font-size: 0.85em; text-align: center; }
nav.toc a { margin: 0 0.5em; white-space: nowrap; }
h1 { font-size: 1.4em; margin: 0.4em 0 0.1em; }
main > p:first-of-type { font-size: 0.8em; color: #555; margin: 0.2em 0; }
section.answers { background: #fff3cd; border-left: 6px solid #e0a800; padding: 0.2em 1em 0.5em; margin: 0.6em 0; }
section.answers h2 { margin: 0.4em 0 0.2em; font-size: 1.2em; }
section.answers h3 { margin: 0.45em 0 0.1em; font-size: 1em; }
section.answers p { margin: 0.1em 0; font-size: 0.85em; line-height: 1.3; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
td.holds { background: #d4edda; }
td.fails { background: #f8d7da; }
td.na { background: #eee; color: #666; }
code, pre { background: #f6f6f6; font-size: 0.85em; }
pre { padding: 0.6em; overflow-x: auto; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
details.scenario { border: 1px solid #ddd; margin: 0.4em 0; padding: 0 0.6em; }
details.scenario > summary { cursor: pointer; padding: 0.3em 0; }
:target { background: #ffe8a1; }
"""

# verdict and parity cells, by what they start with
VERDICTS = (("holds", "holds"), ("does-not-hold", "fails"), ("n/a", "na"))


def figure_png(fig) -> str:
    buffer = io.BytesIO()
    # no timestamp or software tag in the file: the same data gives the same bytes
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def legend_outside(fig, ax) -> None:
    """One legend for the figure, right of the axes, so that it covers no data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def loss_curves(results: dict, plt):
    runs = [(engine, dtype, run) for engine, info in results["engines"].items()
            for dtype, run in info["runs"].items() if run["status"] == "ok"]
    if not runs:
        return None
    dtypes = results["dtypes"]
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(10, 2.8 * len(dtypes)), squeeze=False)
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
            ax.set_title(f"{title}, {dtype}", fontsize=9)
            ax.set_xlabel("canonical iteration", fontsize=8)
    fig.suptitle("Do every engine's losses follow torch's over the canonical iterations?", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes[0][0])
    return fig


def parity_plot(results: dict, plt):
    from compare.parity import summarise

    rows = summarise(results["parity"], PARITY.name)
    if not rows:
        return None
    stages = [s for s in STAGES if s != "structure"]
    dtypes = results["dtypes"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5 * len(dtypes), 3.6), squeeze=False)
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
        ax.set_title(f"{dtype} (dotted: each engine's tolerance)", fontsize=9)
    fig.suptitle("Which engine is furthest from torch, and at which parity stage?", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes[0][0])
    return fig


def differs_heatmap(results: dict, plt):
    """Rows: the scenario steps (constant initialisation) where the engines that ran disagree;
    columns: engines; a cell is marked where that engine differs from the majority."""
    import numpy as np

    from compare.report import differing_steps, find_record, majority, ran
    from compare.scenarios import catalog

    engines = list(results["engines"])
    labels, grid, texts = [], [], []
    for scenario in catalog().values():
        for variant in scenario.variants:
            for label, _, cells in differing_steps(results, scenario, variant, engines):
                observed = [e for e in engines if ran(find_record(results, scenario.id, e, scenario.inits[0], variant))]
                common = majority([cells[e] for e in observed])
                labels.append(f"{scenario.id}{f' [{variant}]' if variant else ''}, {label}")
                grid.append([float(cells[e] != common) if e in observed else np.nan for e in engines])
                texts.append([cells[e] if e in observed else "n/a" for e in engines])
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.3 * len(labels)))
    ax.imshow(np.ma.masked_invalid(grid), cmap=matplotlib_colours(), vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="#333" if grid[i][j] != 1 else "#fff")
    ax.set_facecolor("#dddddd")  # not run there
    ax.set_xticks(range(len(engines)), engines, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("Which engine differs from the others, and at which step? (red: not the majority's outcome, "
                 "grey: did not run)", fontsize=10, pad=24)
    fig.tight_layout()
    return fig


def matplotlib_colours():
    from matplotlib.colors import ListedColormap

    return ListedColormap(["#e8f1fb", "#c0392b"])


def colour_verdicts(html: str) -> str:
    """A CSS class on each verdict cell (claims) and parity cell ("ok", "FAILS")."""
    for word, css in VERDICTS:
        html = re.sub(rf"<td>({re.escape(word)}\b)", rf'<td class="{css}">\1', html)
    html = re.sub(r"<td>([^<]* ok(?: \(raw [^)]*\))?)</td>", r'<td class="holds">\1</td>', html)
    return re.sub(r"<td>([^<]* FAILS[^<]*)</td>", r'<td class="fails">\1</td>', html)


def toc(html: str) -> str:
    """The page's sections, from its h2 headings."""
    entries = re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', html)
    return '<nav class="toc">' + " ".join(f'<a href="#{i}">{re.sub(r"<[^>]+>", "", t)}</a>' for i, t in entries) + "</nav>"


def render_html(results: dict, parts: Dict[str, str], pages: Dict[str, str]) -> str:
    """The page: the answers first, then the plots, the tables, and each scenario collapsed.
    ``parts`` is report.report_parts with in-page links, ``pages`` the scenario pages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: List[str] = []
    captions = {
        "differs": "Only the steps where the engines disagree (from the constant initialisation); each cell says "
                   "whose parameters moved at that step, or that it raised.",
        "parity": "Largest difference from PyTorch per parity stage (after the named rules), log scale.",
        "loss": "Losses over the canonical iterations, every engine overlaid: identical training shows as one line.",
    }
    for name, make in (("differs", differs_heatmap), ("parity", parity_plot), ("loss", loss_curves)):
        fig = make(results, plt)
        if fig is None:
            continue
        figures.append(f'<figure><img alt="{name} plot" src="data:image/png;base64,{figure_png(fig)}">'
                       f"<figcaption>{captions[name]}</figcaption></figure>")
        plt.close(fig)

    def convert(text: str, ids: bool = True) -> str:
        return markdown.markdown(text, extensions=["tables", "fenced_code", "md_in_html"] + (["toc"] if ids else []))

    details = "".join(f'<details class="scenario"><summary>{sid}</summary>\n{convert(text, ids=False)}\n</details>\n'
                      for sid, text in pages.items())
    body = (convert(parts["head"]) + '\n<section class="answers">\n' + convert(parts["answers"]) + "\n</section>\n"
            + ('<h2 id="plots">Plots</h2>\n' + "\n".join(figures) + "\n" if figures else "")
            + convert(parts["rest"])
            + ('\n<h2 id="scenario-details">Scenario details</h2>\n' + details if details else ""))
    return wrap("compare: PyTorch and Keras GAN semantics", colour_verdicts(body))


def wrap(title: str, body: str) -> str:
    """``body`` as one self-contained page in the report's style, its sections linked at the top."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{title}</title>"
            f"<style>{STYLE}</style></head><body>\n{toc(body)}\n<main>\n{body}\n</main>\n</body></html>\n")


def markdown_page(title: str, text: str) -> str:
    """A Markdown page in the report's style."""
    return wrap(title, colour_verdicts(markdown.markdown(text, extensions=["tables", "fenced_code", "toc"])))
