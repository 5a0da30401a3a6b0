"""Render a trace `bt build --trace FILE` wrote as a PNG timeline: one row per track (the run's
phases, then each builder slot), a bar per span coloured by kind, instant events as ticks.

Usage: python bench/plot_trace.py TRACE.json OUT.png [--title TEXT] [--labels N]
(matplotlib, the `bench` extra). --labels: write the label on bars of at least N percent of the
run's length (default 4), so a run of hundreds of builds stays legible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLOURS = {"phase": "#888888", "build": "#1f77b4", "cached": "#2ca02c", "stop": "#d62728"}
FAILED = "#d62728"


def tracks(events: list[dict[str, Any]]) -> dict[int, str]:
    """Track id -> name, in the order the trace asks for (``thread_sort_index``)."""
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    rank = {
        e["tid"]: e["args"]["sort_index"] for e in events if e.get("name") == "thread_sort_index"
    }
    return dict(sorted(names.items(), key=lambda item: (rank.get(item[0], 0), item[0])))


def plot(trace: dict[str, Any], out: Path, title: str, label_share: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = trace["traceEvents"]
    names = tracks(events)
    row = {tid: index for index, tid in enumerate(names)}
    spans = [e for e in events if e.get("ph") == "X"]
    end = max((e["ts"] + e["dur"] for e in spans), default=1) / 1e6
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(names) + 1.2))
    for span in spans:
        start, length = span["ts"] / 1e6, span["dur"] / 1e6
        failed = span["args"].get("result") == "failed"
        colour = FAILED if failed else COLOURS.get(span.get("cat", ""), "#9467bd")
        y = row.get(span["tid"], 0)
        axis.barh(y, length, left=start, height=0.7, color=colour, edgecolor="white")
        if length >= end * label_share / 100:
            text = span["name"].removeprefix("//")
            axis.text(start + length / 2, y, text, ha="center", va="center", fontsize=6)
    for instant in (e for e in events if e.get("ph") == "i"):
        y = row.get(instant["tid"], 0)
        axis.plot([instant["ts"] / 1e6] * 2, [y - 0.4, y + 0.4], color="black", linewidth=0.6)
    axis.set_yticks(list(row.values()), list(names.values()), fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("seconds")
    axis.set_xlim(0, end)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--labels", type=float, default=4.0)
    args = parser.parse_args()
    trace = json.loads(args.trace.read_text())
    title = args.title or next(
        (e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"), ""
    )
    plot(trace, args.out, title, args.labels)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
