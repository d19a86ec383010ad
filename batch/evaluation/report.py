"""Present an evaluation report: a terminal table, a Markdown page and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (("precision", "P"), ("recall", "R"), ("ndcg", "NDCG"), ("map", "MAP"), ("hit_rate", "HR"),
           ("coverage", "Cov"))


def _at(row: dict, metric: str, k: int) -> float:
    return row["curves"][metric][k - 1]


def table_rows(report: dict, k: int = 10) -> tuple[list[str], list[list[str]]]:
    """Return (header, cells) of the comparison table at cut-off ``k``."""
    header = ["row", "users", *(f"{short}@{k}" for _, short in COLUMNS), "RMSE", "MAE"]
    cells = []
    for row in report["rows"]:
        errors = [f"{row[e]:.4f}" if e in row else "" for e in ("rmse", "mae")]
        metrics = (f"{_at(row, m, k):.4f}" for m, _ in COLUMNS)
        cells.append([row["name"], str(row["users"]), *metrics, *errors])
    return header, cells


def summary(report: dict, k: int = 10) -> list[str]:
    """Return one-line comparisons of the default pipeline with the other rows (fair protocol)."""
    rows = {r["key"]: r for r in report["rows"]}
    if "default" not in rows:
        return []
    ours = _at(rows["default"], "precision", k)
    lines = []
    for key in ("original", "als", "ease"):
        if key in rows and _at(rows[key], "precision", k) > 0:
            ratio = ours / _at(rows[key], "precision", k)
            lines.append(f"default pipeline vs {rows[key]['name']}: P@{k} x{ratio:.2f}")
    return lines


def format_table(report: dict, k: int = 10) -> str:
    """Render the table for a terminal (fixed-width columns)."""
    header, cells = table_rows(report, k)
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                         strict=True)))
    out = [line, "-" * len(line)]
    for row in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    proto = report["protocol"]
    out.append(f"fair protocol: {proto['users']} users, fit on {proto['fit_on']}, "
               f"scored on {proto['phase']}; 'original protocol' rows: {proto['original']}")
    out.append(f"evaluated in {report['timings']['total']:.0f}s")
    out.extend(summary(report, k))
    return "\n".join(out)


def _plain(value) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def markdown(report: dict, k: int = 10, plot_name: str | None = "curves.png", command: str = "") -> str:
    """Render the report as a Markdown page (the table, the protocol, the parameters, the plot)."""
    header, cells = table_rows(report, k)
    proto = report["protocol"]
    lines = ["# Offline evaluation", ""]
    if command:
        lines += ["Produced by:", "", "```bash", command, "```", ""]
    lines += [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    lines += [f"| {' | '.join(row)} |" for row in cells]
    lines += ["", *(f"- {s}" for s in summary(report, k)), "", "## Protocol", ""]
    lines += [f"- **{key}**: {_plain(value)}" for key, value in proto.items()]
    run = {k: report[k] for k in ("dataset", "dataset_sha256", "code_version") if k in report}
    run["timings (s)"] = ", ".join(f"{k} {v}" for k, v in report["timings"].items())
    lines += ["", "## Run", "", *(f"- **{k}**: {v}" for k, v in run.items())]
    if plot_name:
        lines += ["", f"## Precision@k and recall@k, k = 1..{proto['k']}", "", f"![curves]({plot_name})"]
    lines += ["", "## Parameters", "", "```json", json.dumps(report["params"], indent=1), "```", ""]
    return "\n".join(lines)


def plot_curves(report: dict, path: Path | str) -> Path:
    """Write a PNG with precision@k and recall@k curves of every row (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours: dict[str, tuple] = {}
    for row in report["rows"]:
        base = row["key"].split("@")[0]  # a row under the original protocol shares its pipeline's colour
        colour = colours.setdefault(base, plt.get_cmap("tab10")(len(colours) % 10))
        style = "--" if row["protocol"] == "original" else "-"
        width = 2.6 if base == "default" else 1.3
        for ax, metric in zip(axes, ("precision", "recall"), strict=True):
            values = row["curves"][metric]
            ax.plot(range(1, len(values) + 1), values, style, color=colour, linewidth=width,
                    label=row["name"])
    for ax, title in zip(axes, ("Precision@k", "Recall@k"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"ML-1M, fit on {report['protocol']['fit_on']}, scored on {report['protocol']['phase']} "
                 "(dashed: original protocol)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, directory: Path | str, k: int = 10, command: str = "") -> tuple[Path, Path]:
    """Write ``evaluation.md`` and ``curves.png`` into ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png = plot_curves(report, directory / "curves.png")
    md = directory / "evaluation.md"
    md.write_text(markdown(report, k, png.name, command))
    return md, png
