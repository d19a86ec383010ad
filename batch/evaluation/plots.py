"""PNG curves of an evaluation report (matplotlib, Agg backend; imported only when writing a report)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_random(report: dict, path: Path | str) -> Path:
    """Write precision@k and recall@k of every random-protocol row (dashed: original protocol)."""
    plt = _pyplot()
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
        ax.set(title=title, xlabel="k")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Random split: fit on {report['protocol']['fit_on']}, scored on "
                 f"{report['protocol']['phase']} (dashed: original protocol)")
    return _save(fig, plt, path)


def plot_temporal(report: dict, path: Path | str) -> Path:
    """Write precision@k for warm users (every row) and cold users (the fallback lists)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    users = report["protocol"]["users"]
    for ax, segment in zip(axes, ("warm", "cold"), strict=True):
        rows = [r for r in report["rows"] if r["segment"] == segment]
        for i, row in enumerate(rows):
            values = row["curves"]["precision"]
            width = 2.6 if row["key"].split("@")[0] in ("default", "fallback") else 1.3
            ax.plot(range(1, len(values) + 1), values, color=plt.get_cmap("tab10")(i % 10), linewidth=width,
                    label=row["name"])
        ax.set(title=f"Precision@k, {segment} users ({users[segment]})", xlabel="k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    cuts = report["protocol"]["cuts"]
    cut = cuts["test_utc" if report["protocol"]["phase"] == "test" else "validation_utc"]
    fig.suptitle(f"Time split: fit on ratings before {cut[:10]}, scored on {report['protocol']['phase']}")
    return _save(fig, plt, path)


def _save(fig, plt, path: Path | str) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
