"""Reading users' and shared data files: one reader for every task module.

Errors name the file and the row (1-based line number for JSONL, data row for CSV/TSV), so a
bad row can be found and fixed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is the shared data folder complete?")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, row {lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, row {lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def require_fields(record: dict[str, Any], fields: Sequence[str], path: str | Path, row: int) -> None:
    """Raise ``ValueError`` naming the file, row and first missing field (and the fields found)."""
    for key in fields:
        if key not in record:
            raise ValueError(f"{path}, row {row}: missing field {key!r} (found: {', '.join(map(str, record))})")


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects, or ``{"data": [...]}``), ``.csv`` /
    ``.tsv`` (header row; values as strings) or ``.parquet`` file, as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {TABLE_SUFFIXES}")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if suffix == ".jsonl":
        return [record for _, record in iter_jsonl(path)]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("data", data.get("rows", data))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return data
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
