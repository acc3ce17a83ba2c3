"""`python -m trainer report RUN_DIR [RUN_DIR ...] [--out DIR]`: plots and an HTML page for finished or
running runs, several overlaid (one colour per run).

Each RUN_DIR is a run folder (`metrics.jsonl`) or a staged run (its `stages/*/metrics.jsonl`, one line
per stage). Writes one PNG per panel, `overview.png` with all of them, and `index.html` with the plots,
each run's config and summary, and its sample completions (default out: the first RUN_DIR's `report/`).
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainer.tracking import SAMPLES_FILE, read_metric_rows

USAGE = __doc__
# (file name, title, y label, the metric keys drawn; a key ending in "/" draws every key under it).
PANELS = [
    ("reward", "Reward (mean over the step's completions)", "reward", ["reward/mean"]),
    ("accuracy", "Accuracy: training rollouts (lines), held-out greedy (markers)", "accuracy", ["acc/mean", "acc/"]),
    ("response_length", "Response length", "tokens", ["response_len/mean"]),
    ("entropy", "Policy entropy", "nats per token", ["actor/entropy"]),
    ("kl", "KL to the old policy (approx.) and to the reference", "KL", ["actor/approx_kl", "actor/kl"]),
    ("clip_fraction", "Clipped fraction of tokens", "fraction", ["actor/clip_frac"]),
    ("logp_mismatch", "Rollout vs trainer log-prob mismatch", "mean |delta log p|", ["logp_mismatch"]),
    ("time", "Time per step by phase", "seconds", ["time/"]),
]
EVAL_KEYS = ["eval/acc", "eval/acc/"]  # markers on the accuracy panel
SKIP = {"time/step", "acc/mean"}  # prefix expansion: the total of phases, the overall accuracy (drawn by name)


@dataclass
class Run:
    label: str
    folder: Path
    train: dict[int, dict] = field(default_factory=dict)
    "Per step, its last line of training metrics (a resumed run's rerun of a step replaces it)."
    evals: dict[int, dict] = field(default_factory=dict)
    "Per step, its last held-out evaluation (logged on a line of its own, at the same step)."

    @classmethod
    def load(cls, label: str, folder: Path) -> "Run":
        run = cls(label, folder)
        for row in read_metric_rows(folder):
            is_eval = all(k.startswith("eval/") for k in row if k not in ("step", "time"))
            (run.evals if is_eval else run.train)[int(row["step"])] = row
        return run

    def keys(self, wanted: list[str]) -> list[str]:
        present = {key for rows in (self.train, self.evals) for row in rows.values() for key in row}
        out = []
        for key in wanted:
            if key.endswith("/"):
                found = sorted(k for k in present if k.startswith(key) and k not in SKIP and "/" not in k[len(key):])
                # One task's accuracy is the overall accuracy again: drawn once.
                out += found if len(found) > 1 or key == "time/" else []
            elif key in present:
                out.append(key)
        return list(dict.fromkeys(out))

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of `key` (an `eval/` key from the evaluation lines, any other from training)."""
        rows = self.evals if key.startswith("eval/") else self.train
        steps = [s for s in sorted(rows) if key in rows[s]]
        return steps, [float(rows[s][key]) for s in steps]


def find_runs(folders: list[Path]) -> list[Run]:
    runs = []
    for folder in folders:
        if (folder / "metrics.jsonl").exists():
            runs.append(Run.load(folder.name, folder))
        for stage in sorted((folder / "stages").glob("*/metrics.jsonl")) if (folder / "stages").is_dir() else []:
            runs.append(Run.load(f"{folder.name}/{stage.parent.name}", stage.parent))
        if not (folder / "metrics.jsonl").exists() and not (folder / "stages").is_dir():
            raise ValueError(f"{folder}: no metrics.jsonl (not a run folder)")
    return runs


def draw_panel(ax, runs: list[Run], keys: list[str], colours: dict[str, str], palette: list[str]) -> list[dict]:
    """Draw one panel; returns what was drawn, read back from the plot (label, steps, values). One run:
    a colour per metric; several: a colour per run and a line style per metric."""
    styles = ["-", "--", ":", "-."]
    drawn = []
    for run in runs:
        for i, key in enumerate(run.keys(keys)):
            steps, values = run.series(key)
            if steps:
                colour, style = (colours[run.label], styles[i % len(styles)]) if len(runs) > 1 else (palette[i], "-")
                line, = ax.plot(steps, values, style, color=colour, linewidth=1.2, label=f"{run.label}: {key}")
                drawn.append({"label": line.get_label(), "steps": [int(x) for x in line.get_xdata()],
                              "values": [float(y) for y in line.get_ydata()]})
    return drawn


def draw_eval_markers(ax, runs: list[Run], colours: dict[str, str]) -> list[dict]:
    markers = ["o", "s", "^", "D", "v"]
    drawn = []
    for run in runs:
        for i, key in enumerate(run.keys(EVAL_KEYS)):
            steps, values = run.series(key)
            if steps:
                points = ax.scatter(steps, values, marker=markers[i % len(markers)], s=36, color=colours[run.label],
                                    edgecolors="black", linewidths=0.5, zorder=3, label=f"{run.label}: {key}")
                offsets = points.get_offsets()
                drawn.append({"label": points.get_label(), "steps": [int(x) for x in offsets[:, 0]],
                              "values": [float(y) for y in offsets[:, 1]]})
    return drawn


def write_report(folders: list[Path], out_dir: Path) -> dict[str, list[dict]]:
    """The PNGs and index.html; returns, per PNG, the series drawn in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = find_runs(folders)
    out_dir.mkdir(parents=True, exist_ok=True)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {run.label: palette[i % len(palette)] for i, run in enumerate(runs)}
    drawn: dict[str, list[dict]] = {}
    panels = [p for p in PANELS if any(run.keys(p[3]) for run in runs)]
    grid, axes = plt.subplots((len(panels) + 1) // 2, 2, figsize=(14, 3.6 * ((len(panels) + 1) // 2)), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for (name, title, ylabel, keys), grid_ax in zip(panels, axes.flat):
        fig, ax = plt.subplots(figsize=(11, 4.5))
        for target in (ax, grid_ax):
            lines = draw_panel(target, runs, keys, colours, palette)
            if name == "accuracy":
                lines += draw_eval_markers(target, runs, colours)
            target.set_title(title, fontsize=10)
            target.set_xlabel("step")
            target.set_ylabel(ylabel)
            target.grid(alpha=0.3)
        # The panel's own PNG keeps its legend beside the plot, clear of the lines; the overview's sits inside.
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        grid_ax.legend(fontsize=6, loc="best", framealpha=0.6)
        drawn[f"{name}.png"] = lines
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    grid.tight_layout()
    grid.savefig(out_dir / "overview.png", dpi=90)
    plt.close(grid)
    (out_dir / "index.html").write_text(page(runs, [f"{p[0]}.png" for p in panels]), encoding="utf-8")
    (out_dir / "series.json").write_text(json.dumps(drawn))
    return drawn


def page(runs: list[Run], images: list[str]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>run report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "vertical-align:top}pre{background:#f6f6f6;padding:8px;max-height:400px;overflow:auto}</style>",
             "<h1>Run report</h1><p>" + ", ".join(html.escape(str(r.folder)) for r in runs) + "</p>"]
    parts += [f"<h2>{html.escape(name)}</h2><img src='{html.escape(name)}'>" for name in images]
    for run in runs:
        parts.append(f"<h2>{html.escape(run.label)}</h2>")
        summary = run.folder / "summary.json"
        if summary.exists():
            rows = flatten(json.loads(summary.read_text()))
            parts.append("<h3>Summary</h3><table>" + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(format_value(v))}</td></tr>" for k, v in rows) + "</table>")
        config = run.folder / "config.yaml"
        if config.exists():
            parts.append(f"<h3>Config</h3><pre>{html.escape(config.read_text())}</pre>")
        samples = last_samples(run.folder / SAMPLES_FILE)
        if samples:
            columns = [c for c in ("step", "task", "prompt", "completion", "ground_truth", "reward", "correct")
                       if c in samples[0]]
            parts.append("<h3>Sample completions (last record)</h3><table><tr>"
                         + "".join(f"<th>{c}</th>" for c in columns) + "</tr>" + "".join(
                             "<tr>" + "".join(f"<td>{html.escape(format_value(row.get(c)))}</td>" for c in columns)
                             + "</tr>" for row in samples) + "</table>")
    return "\n".join(parts)


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in flatten(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")]
    return [(prefix, value)]


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def last_samples(path: Path) -> list[dict]:
    """The completions of the last step that recorded any."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    last = max((row["step"] for row in rows), default=None)
    return [row for row in rows if row["step"] == last]


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv or not argv:
        print(USAGE)
        return 0 if argv else 2
    out = None
    if "--out" in argv:
        at = argv.index("--out")
        if at + 1 >= len(argv):
            print("error: --out needs a folder", file=sys.stderr)
            return 2
        out = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    folders = [Path(a) for a in argv]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = out or folders[0] / "report"
    try:
        drawn = write_report(folders, out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[report] {len(drawn)} plots, overview.png and index.html in {out}")
    return 0
