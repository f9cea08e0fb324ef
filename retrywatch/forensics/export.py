"""Exporting an analysis for notebooks: Parquet and CSV, written as the logs are read.

``events.*`` holds one row per distinct connect-failure line of a chunk with its
``count`` (a storm's identical lines arrive counted; ``df.loc[df.index.repeat(df["count"])]``
expands them), so the export stays small and the memory bounded. The aggregates are
written at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retrywatch.forensics.analysis import Analysis

__all__ = ["EventExport", "write_aggregates"]


class EventExport:
    """An event sink for :func:`retrywatch.forensics.analysis.analyze` writing
    ``events.parquet`` and ``events.csv`` in ``folder``, a chunk at a time."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._csv = folder / "events.csv"
        self._csv_header = True
        self.rows = 0

    def __call__(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self.folder / "events.parquet", self._schema)
        self._parquet.write_table(table.cast(self._schema))
        frame.to_csv(self._csv, mode="w" if self._csv_header else "a",
                     header=self._csv_header, index=False)
        self._csv_header = False
        self.rows += len(frame)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


def _both(frame: pd.DataFrame, folder: Path, name: str) -> list[str]:
    frame.to_parquet(folder / f"{name}.parquet", index=False)
    frame.to_csv(folder / f"{name}.csv", index=False)
    return [f"{name}.parquet", f"{name}.csv"]


def write_aggregates(analysis: Analysis, folder: Path) -> list[str]:
    """Timeline, failures by kind, upstream and server per second, and the runaway
    connections; returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    timeline: Any = analysis.timeline.rename("failures").reset_index()
    written += _both(timeline, folder, "timeline")
    written += _both(analysis.by_kind.reset_index(), folder, "by_kind")
    written += _both(analysis.by_upstream, folder, "by_upstream")
    written += _both(analysis.by_server, folder, "by_server")
    written += _both(analysis.connections(), folder, "connections")
    return written
