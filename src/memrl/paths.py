"""Where memrl finds shared benchmark data and keeps its caches.

Both locations are configurable through environment variables so that tests, benchmarks and
users on other machines can point them elsewhere without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MEMRL_DATA_DIR"
CACHE_ENV = "MEMRL_CACHE_DIR"


def cache_dir() -> Path:
    """Folder for converted models and other derived artefacts (``$MEMRL_CACHE_DIR`` or
    ``~/.cache/memrl``). Created on first use."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "memrl")
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_dir(required: bool = True) -> Path | None:
    """The shared benchmark data folder.

    Looks at ``$MEMRL_DATA_DIR`` first, then ``../shared/data`` next to the current directory and
    next to the source checkout. Raises ``FileNotFoundError`` naming every place looked at when
    ``required`` and nothing is found.
    """
    candidates: list[Path] = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    candidates.append(Path.cwd() / ".." / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    if required:
        looked = ", ".join(str(p) for p in candidates)
        raise FileNotFoundError(
            f"shared data folder not found (looked in: {looked}). Set {DATA_ENV} to the folder "
            "that holds gsm8k/, math_eval/, few_shot_classification/ ..."
        )
    return None


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Resolve ``path`` as given, or relative to the shared data folder when it does not exist
    as given (so ``gsm8k/test.jsonl`` works from anywhere)."""
    p = Path(path)
    if p.exists():
        return p
    root = data_dir(required=False)
    if root is not None and (root / p).exists():
        return root / p
    raise FileNotFoundError(f"data file not found: {path}")
