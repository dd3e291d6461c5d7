"""Where memrl finds shared benchmark data and keeps its caches.

Both locations are configurable through environment variables so that tests, benchmarks and
users on other machines can point them elsewhere without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MEMRL_DATA_DIR"
# YAML presets ship inside the package so that a plain `pip install` has them too.
PRESET_DIR = Path(__file__).resolve().parent / "configs"
CACHE_ENV = "MEMRL_CACHE_DIR"


def run_names(method: str, model: str | os.PathLike, dataset: str | os.PathLike) -> dict[str, str]:
    """Short names that tell runs apart: the method, the model's last path part (a hub id's
    repository name; not its stem, which would cut ``Qwen2.5-0.5B`` at the dot) and the
    dataset file's stem (``gsm8k`` or ``train`` of ``.../train.jsonl``). Run folders and the
    groups ``memrl eval`` averages over are named from these."""
    return {"method": method, "model": Path(str(model).rstrip("/")).name, "dataset": Path(str(dataset)).stem}


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


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or the shipped preset ``<name>.yaml`` (see :func:`preset_names`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        return p
    candidate = PRESET_DIR / f"{p}.yaml"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"no config file or preset {str(name_or_path)!r}; presets: {preset_names()}")


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with memrl (``cpu-tiny``, ``gsm8k-qwen2.5-0.5b``, ...)."""
    return sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
