"""Present an evaluation report: terminal tables, a Markdown page and PNG curves, per protocol."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (("precision", "P"), ("recall", "R"), ("ndcg", "NDCG"), ("map", "MAP"), ("hit_rate", "HR"),
           ("coverage", "Cov"))
SEGMENTS = ("warm", "cold", "all")


def _at(row: dict, metric: str, k: int) -> float:
    return row["curves"][metric][k - 1]


def table_rows(report: dict, k: int = 10, segment: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Return (header, cells) of one protocol's table at cut-off ``k`` (one segment, or every row)."""
    header = ["row", "users", *(f"{short}@{k}" for _, short in COLUMNS), "RMSE", "MAE"]
    cells = []
    for row in report["rows"]:
        if segment and row.get("segment") != segment:
            continue
        errors = [f"{row[e]:.4f}" if e in row else "" for e in ("rmse", "mae")]
        metrics = (f"{_at(row, m, k):.4f}" for m, _ in COLUMNS)
        cells.append([row["name"], str(row["users"]), *metrics, *errors])
    if segment:  # no rating errors on the temporal protocol
        header, cells = header[:-2], [c[:-2] for c in cells]
    return header, cells


def summary(report: dict, k: int = 10) -> list[str]:
    """Return one-line comparisons: the default with the best tuned baseline (paired standard error),
    with every other baseline, and the published fallback with the original one."""
    rows = {r["key"]: r for r in report["rows"]}
    lines = []
    paired = report.get("paired")
    if paired and "default" in rows:
        best = rows[paired["best_baseline"]]
        for metric, short in (("precision", "P"), ("ndcg", "NDCG")):
            d = paired["default_minus"][best["key"]][f"{metric}@10"]
            ratio = _at(rows["default"], metric, 10) / max(_at(best, metric, 10), 1e-12)
            lines.append(f"default pipeline vs the best tuned baseline, {best['name']}: {short}@10 "
                         f"x{ratio:.3f}, difference {d['difference']:+.4f} (paired standard error "
                         f"{d['standard_error']:.4f}, {paired['users']} users)")
        ours = _at(rows["default"], "precision", k)
        for key in ("original", "als", "ease", "knn", "recent_pop"):
            if key in rows and key != best["key"] and _at(rows[key], "precision", k) > 0:
                ratio = ours / _at(rows[key], "precision", k)
                lines.append(f"default pipeline vs {rows[key]['name']}: P@{k} x{ratio:.2f}")
    if "fallback@cold" in rows and _at(rows["popularity@cold"], "precision", k) > 0:
        ratio = _at(rows["fallback@cold"], "precision", k) / _at(rows["popularity@cold"], "precision", k)
        lines.append(f"cold users: published fallback vs original fallback: P@{k} x{ratio:.2f}")
    return lines


def baselines_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (header, cells): every tuned baseline, its chosen settings and its validation figures."""
    header = ["baseline", "chosen on validation", "configurations tried", "validation P@10",
              "validation NDCG@10"]
    cells = []
    for key, doc in report.get("baselines", {}).items():
        if not doc:
            cells.append([key, "not tuned (built-in defaults)", "0", "", ""])
            continue
        settings = ", ".join(f"{k}={v}" for k, v in doc["settings"].items())
        cells.append([key, settings, str(doc.get("trials", "")), f"{doc['validation']['precision@10']:.4f}",
                      f"{doc['validation']['ndcg@10']:.4f}"])
    return header, cells


def _text_table(header: list[str], cells: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                             strict=True)))
    return [line(header), "-" * len(line(header)), *(line(r) for r in cells)]


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in cells)]


def fallback_table(report: dict, bold: bool = True) -> tuple[list[str], list[list[str]]]:
    """Return (header, cells) of the cold-start rules: P@10 / NDCG@10 on validation and on the phase."""
    fb = report["fallback"]
    phases = [p for p in ("validation", "test") if p in fb]
    header = ["rule", *(f"{m} ({p}, {fb[p][0]['users']} cold users)" for p in phases
                        for m in ("P@10", "NDCG@10"))]
    cells = {}
    for phase in phases:
        for trial in fb[phase]:
            cells.setdefault(trial["rule"], {})[phase] = trial
    chosen = fb["published_rule"]
    out = []
    for rule, by_phase in cells.items():
        name = (f"**{rule}** (published)" if bold else f"{rule} (published)") if rule == chosen else rule
        out.append([name, *(f"{by_phase[p][m]:.4f}" if p in by_phase else "" for p in phases
                            for m in ("precision@10", "ndcg@10"))])
    return header, out


def recency_line(report: dict) -> str:
    """Return one line on the recency guard: the best half-life's validation gain, adopted or not."""
    g = report["fallback"]["recency_guard"]
    verdict = "adopted" if g["adopted"] else "not adopted (within one standard error)"
    return (f"recency: {g['best_recency_rule']} vs {g['over']}: validation P@10 gain {g['gain_p@10']:+.4f} "
            f"(standard error {g['standard_error']:.4f}): {verdict}")


def format_table(doc: dict, k: int = 10) -> str:
    """Render every protocol's tables for a terminal (fixed-width columns)."""
    out = []
    for name, report in doc["protocols"].items():
        proto = report["protocol"]
        if name == "random":
            out += ["random split (60/20/20 by user; every user is warm)",
                    *_text_table(*table_rows(report, k))]
            out.append(f"fair protocol: {proto['users']} users, fit on {proto['fit_on']}, scored on "
                       f"{proto['phase']}; 'original protocol' rows: {proto['original']}")
        else:
            cuts = proto["cuts"]
            out.append(f"temporal split (cuts {cuts['validation_utc']}, {cuts['test_utc']}; fit on "
                       f"{proto['fit_on']}, scored on {proto['phase']})")
            for segment in SEGMENTS:
                out += ["", f"{segment} users ({proto['users'][segment]})",
                        *_text_table(*table_rows(report, k, segment))]
            out += ["", "cold-start rules (chosen on validation)",
                    *_text_table(*fallback_table(report, bold=False)), recency_line(report)]
        out += [f"evaluated in {report['timings']['total']:.0f}s", *summary(report, k), ""]
    return "\n".join(out)


def _plain(value) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def markdown(doc: dict, k: int = 10, plots: dict[str, str] | None = None, command: str = "") -> str:
    """Render the report as a Markdown page: per protocol the tables, the protocol and the plot."""
    plots = plots or {}
    lines = ["# Offline evaluation (generated)", ""]
    if command:
        lines += ["Produced by:", "", "```bash", command, "```", ""]
    for name, report in doc["protocols"].items():
        proto = report["protocol"]
        if name == "random":
            lines += ["## Random split (the original project's protocol)", "",
                      "Every user has training ratings (all warm; no cold users).", "",
                      *_md_table(*table_rows(report, k))]
        else:
            lines += ["## Temporal split (as the product is used)", ""]
            for segment in SEGMENTS:
                lines += [f"### {segment.capitalize()} users ({proto['users'][segment]})", "",
                          *_md_table(*table_rows(report, k, segment)), ""]
            lines += ["### Cold-start lists (chosen on validation, never on test)", "",
                      *_md_table(*fallback_table(report)), "", f"{recency_line(report)}.", ""]
        lines += ["", *(f"- {s}" for s in summary(report, k)), "",
                  f"### Tuned baselines ({name}: each chosen on this protocol's validation phase)", "",
                  *_md_table(*baselines_table(report)), "", f"### Protocol ({name})", ""]
        lines += [f"- **{key}**: {_plain(value)}" for key, value in proto.items()]
        lines += [f"- **timings (s)**: {_plain(report['timings'])}"]
        if name in plots:
            lines += ["", f"![{name}]({plots[name]})"]
        lines += [""]
    run = {k: doc[k] for k in ("dataset", "dataset_sha256", "code_version") if k in doc}
    lines += ["## Run", "", *(f"- **{k}**: {v}" for k, v in run.items()), f"- **total**: {doc['seconds']} s"]
    params = next(iter(doc["protocols"].values()))["params"]
    lines += ["", "## Parameters", "", "```json", json.dumps(params, indent=1), "```", ""]
    return "\n".join(lines)


def write_report(doc: dict, directory: Path | str, k: int = 10, command: str = "") -> list[Path]:
    """Write ``evaluation.md`` and one PNG per protocol into ``directory``; return the paths."""
    from batch.evaluation.plots import plot_random, plot_temporal

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    makers = {"random": (plot_random, "curves.png"), "temporal": (plot_temporal, "temporal.png")}
    written = [makers[name][0](report, directory / makers[name][1])
               for name, report in doc["protocols"].items()]
    md = directory / "evaluation.md"
    md.write_text(markdown(doc, k, {n: makers[n][1] for n in doc["protocols"]}, command))
    return [md, *written]


def save(doc: dict, k: int = 10, json_path: Path | None = None, report_dir: Path | None = None) -> list[str]:
    """Write ``doc`` as JSON to ``json_path`` and as a page with its plots into ``report_dir`` (each if
    given); return one line per output naming what was written."""
    lines = []
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=1) + "\n")
        lines.append(f"json: {json_path}")
    if report_dir:
        paths = write_report(doc, report_dir, k, doc.get("command", ""))
        lines.append(f"report: {', '.join(map(str, paths))}")
    return lines
