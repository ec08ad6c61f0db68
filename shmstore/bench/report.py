"""Render a results JSON (``shmstore bench --json FILE``) as Markdown tables:

    python -m shmstore.bench.report benchmarks/results/<date>-<host>.json

The tables in ``docs/performance.md`` are pasted from this output, so every figure there
comes from a saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .harness import fmt


def table(t: dict[str, Any]) -> str:
    cols = [(k, h) for k, h in t["columns"] if h]
    out = [f"**{t['title']}**", ""]
    if t.get("params"):
        out += ["Parameters: " + ", ".join(f"{k}={v}" for k, v in t["params"].items()), ""]
    out.append("| " + " | ".join(h for _, h in cols) + " |")
    text = [any(isinstance(r.get(k), str) for r in t["rows"]) for k, _ in cols]
    out.append("|" + "|".join("---" if tx else "---:" for tx in text) + "|")
    for r in t["rows"]:
        out.append("| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |")
    out += [""] + [f"- {n}" for n in t.get("notes", [])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    doc = json.loads(Path(args[0]).read_text())
    m = doc["machine"]
    print(f"Run {doc['started_utc']} ({doc['mode']}), {doc['duration_s']['total']:.0f} s;"
          f" {m['cpu_model']}, {m['cores_online']} cores, {m['python']}, kernel {m['kernel']};"
          f" shmstore {m['shmstore_commit']}; load average {m['loadavg_at_start']} at the start,"
          f" {doc.get('loadavg_at_end')} at the end.\n")
    for tables in doc["scenarios"].values():
        for t in tables:
            print(table(t))
            print()
    print(table(doc["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
