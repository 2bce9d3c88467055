"""``python -m bench``: run the benchmark scenarios and print a table.

Each number is compared with a baseline measured in the same run (a bare asyncio loop, the
upstream's own ceiling, an idle server, a plain file copy), because these machines are shared and
noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.harness import ROOT  # noqa: F401 - puts the repository on sys.path for the fake
from bench.scenarios import SCENARIOS, Row

DEFAULT = ["fake", "overhead", "saturation", "ingest", "many-small", "api", "answers"]
REQUESTS = {  # where --requests is not given
    "scale": 1_000_000,
    "embeddings": 4_000,
    "instructions": 3_000,
    "adaptive": 24_000,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=DEFAULT,
        help=f"some of {', '.join(SCENARIOS)} (default: all but scale and embeddings)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="requests per batch (default 50,000; scale: 1,000,000; embeddings: 4,000; "
        "instructions: 3,000)",
    )
    parser.add_argument("--database-url", help="run on this PostgreSQL instead of SQLite")
    args = parser.parse_args()
    store_flags = ["--database-url", args.database_url] if args.database_url else []
    rows: list[Row] = []
    for name in args.scenarios:
        requests = args.requests or REQUESTS.get(name, 50_000)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
            rows += SCENARIOS[name](Path(work), requests, store_flags)
    _print(rows, store="postgresql" if store_flags else "sqlite")
    return 0 if all(row.ok is not False for row in rows) else 1


def _print(rows: list[Row], store: str) -> None:
    table = Table(
        title=f"batchd bench — {store}, {platform.machine()}, {platform.python_version()}"
    )
    for column in ("scenario", "measure", "batchd", "baseline", "ratio", "target", ""):
        table.add_column(column)
    for row in rows:
        mark = "" if row.ok is None else ("ok" if row.ok else "MISS")
        table.add_row(
            row.scenario, row.measure, row.batchd, row.baseline, row.ratio, row.target, mark
        )
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
