"""``shmstore bench --plot FILE.png``: the run's main figures as one PNG (matplotlib).

One panel per scenario that ran and has something to draw: stream GB/s by chunk size,
wake latency p50 / p99, fan-out, the writer pool, first byte. matplotlib is an optional
dependency (``pip install 'shmstore[bench]'``); the caller checks it is installed before
the run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import Table, human

Rows = list[dict[str, Any]]


def _rows(tables: dict[str, list[Table]], scenario: str) -> Rows:
    return [r for t in tables.get(scenario, []) for r in t.rows]


def _measured(rows: Rows, key: str) -> Rows:
    return [r for r in rows if r.get(key) is not None]


def _stream(ax: Any, rows: Rows) -> None:
    rows = [r for r in _measured(rows, "gbps") if "chunk" in r]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for v in variants:
        pts = sorted((r["chunk"], r["gbps"]) for r in rows if r["variant"] == v)
        style = "-" if v.startswith("shmstore") else "--" if v.startswith("memcpy") else ":"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=v)
    chunks = sorted({r["chunk"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(chunks, [human(c) for c in chunks])
    ax.set_xlabel("chunk size")
    ax.set_ylabel("GB/s (median)")
    ax.set_title("stream: producer -> consumer")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def _latency(ax: Any, rows: Rows) -> None:
    rows = _measured(rows, "p50_us")
    placements = list(dict.fromkeys(r["placement"] for r in rows))
    mechs = list(dict.fromkeys(r["mechanism"] for r in rows))
    width = 0.8 / max(len(mechs), 1)
    for j, m in enumerate(mechs):
        xs, p50, p99 = [], [], []
        for i, p in enumerate(placements):
            r = next((r for r in rows if r["placement"] == p and r["mechanism"] == m), None)
            if r is not None:
                xs.append(i + (j - (len(mechs) - 1) / 2) * width)
                p50.append(r["p50_us"])
                p99.append(r["p99_us"])
        bars = ax.bar(xs, p50, width, label=m)
        ax.scatter(xs, p99, marker="_", s=80, color=bars.patches[0].get_facecolor()
                   if bars.patches else None)
    ax.set_xticks(range(len(placements)), placements)
    ax.set_yscale("log")
    ax.set_ylabel("one way, us (bar p50, tick p99)")
    ax.set_title("publish-to-wake latency")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, axis="y")


def _fanout(ax: Any, rows: Rows) -> None:
    rows = _measured(rows, "aggregate_gbps")
    n = [r["readers"] for r in rows]
    ax.plot(n, [r["aggregate_gbps"] for r in rows], "-o", label="aggregate GB/s")
    ax.plot(n, [r["reader_gbps"] for r in rows], "--o", label="per reader GB/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlabel("readers")
    ax.set_ylabel("GB/s")
    ax.set_title("fan-out: 1 writer, N readers")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _pool(ax: Any, rows: Rows) -> None:
    rows = _measured(rows, "fill_gbps")
    w = [r["writers"] for r in rows]
    ax.plot(w, [r["fill_gbps"] for r in rows], "-o", label="shmstore fill")
    ax.plot(w, [r["raw_gbps"] for r in rows], "--o", label="raw shm pool (limit)")
    ax.plot(w, [r["deliver_gbps"] for r in rows], ":o", label="with reader: delivered")
    ax.set_xticks(w, [str(x) for x in w])
    ax.set_xlabel("writer processes")
    ax.set_ylabel("GB/s")
    ax.set_title("writer pool filling one resource")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _firstbyte(ax: Any, rows: Rows) -> None:
    rows = _measured(rows, "first_ms")
    labels = [r["variant"] for r in rows]
    ax.barh(range(len(rows)), [r["first_ms"] for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms until the first MiB is held (log)")
    ax.set_title("first byte")
    ax.grid(alpha=0.3, axis="x")


PANELS: list[tuple[str, str, Callable[[Any, Rows], None]]] = [
    ("stream", "gbps", _stream),
    ("latency", "p50_us", _latency),
    ("fanout", "aggregate_gbps", _fanout),
    ("pool", "fill_gbps", _pool),
    ("firstbyte", "first_ms", _firstbyte),
]


def plot(tables: dict[str, list[Table]], path: str | Path, title: str) -> list[str]:
    """Draw the panels the run has data for into ``path``; return the scenarios drawn."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    todo = [(s, fn) for s, key, fn in PANELS if _measured(_rows(tables, s), key)]
    if not todo:
        raise ValueError("nothing to plot: none of stream, latency, fanout, pool, firstbyte"
                         " ran")
    cols = 2 if len(todo) > 1 else 1
    nrows = (len(todo) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 4.5 * nrows), squeeze=False)
    try:
        flat = [ax for row in axes for ax in row]
        for ax, (scenario, fn) in zip(flat, todo, strict=False):
            fn(ax, _rows(tables, scenario))
        for ax in flat[len(todo):]:
            ax.set_visible(False)
        fig.suptitle(title)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return [s for s, _ in todo]
