"""Snapshots of the service's committed state in ``--state-dir``: writing, finding the newest
loadable one at start, pruning old ones.

Layout: one folder per snapshot, ``snapshot-<commits, 8 digits>/``, holding ``service.json`` (the
step, the counters and the reward options the state was built with) and the reward state as its
own ``save`` writes it (``memory/`` for Memory-R/Memory-R+, ``outcome_counts.json`` for
outcome-ucb; nothing for stateless methods). A snapshot is written in a temporary folder beside
it and renamed into place (:func:`memrl.io.atomic_dir`), so a kill at any moment leaves either
the previous snapshots or the new one complete; leftovers of an interrupted write (``.snapshot-*``)
are removed at the next start. At start the newest snapshot that loads is used; one that fails to
load is reported and the one before it tried.

Snapshots hold the *committed* state only: samples of a step not yet committed are not saved.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from memrl.io import atomic_dir

logger = logging.getLogger(__name__)

FORMAT_NAME = "memrl.serve_snapshot"
FORMAT_VERSION = 1
_NAME = re.compile(r"snapshot-(\d{8,})$")
# fault injection for tests: "SECONDS" or "SECONDS:FROM" pauses inside the temporary folder, before
# the rename, when writing the snapshot of commit FROM or later (a kill -9 test kills it there)
PAUSE_ENV = "MEMRL_SERVE_SNAPSHOT_PAUSE_S"


def _test_pause(commits: int) -> None:
    value = os.environ.get(PAUSE_ENV, "")
    if value:
        seconds, _, start = value.partition(":")
        if commits >= int(start or 0):
            time.sleep(float(seconds))


def state_file_name(state: Any) -> str | None:
    """Where ``state`` is saved inside a snapshot folder (None: the method holds no state)."""
    from memrl.rewards.exploration import OutcomeUCBReward
    from memrl.rewards.memory_rewards import MemoryRPlus

    if isinstance(state, MemoryRPlus):
        return "memory"
    if isinstance(state, OutcomeUCBReward):
        return "outcome_counts.json"
    return None


class SnapshotStore:
    """Snapshots of one service in ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)
        self.root.mkdir(parents=True, exist_ok=True)

    def snapshots(self) -> list[Path]:
        """Complete snapshot folders, oldest first."""
        found = [p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def clean_leftovers(self) -> list[str]:
        """Remove temporary folders of interrupted writes; returns their names."""
        removed = []
        for p in self.root.iterdir():
            if p.name.startswith(".snapshot-"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        if removed:
            logger.warning("removed leftovers of an interrupted snapshot in %s: %s", self.root, ", ".join(removed))
        return removed

    def save(self, state: Any, meta: dict[str, Any]) -> Path:
        """Write a snapshot of ``state`` with ``meta`` (must hold ``commits``); returns its folder.
        A snapshot of the same commit count already on disk is the same state and is kept."""
        target = self.root / f"snapshot-{int(meta['commits']):08d}"
        if target.is_dir():
            return target
        record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "saved_at": time.time(), **meta}
        with atomic_dir(target) as tmp:
            name = state_file_name(state)
            if name is not None:
                state.save(tmp / name)
            (tmp / "service.json").write_text(json.dumps(record, indent=2, default=str))
            _test_pause(int(meta["commits"]))
        for old in self.snapshots()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any]:
        meta = json.loads((path / "service.json").read_text())
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a memrl serve snapshot of version {FORMAT_VERSION}")
        return meta

    def load_latest(self, state: Any, options: dict[str, Any]) -> dict[str, Any] | None:
        """Load the newest loadable snapshot into ``state``; returns its meta (None: no snapshot).

        A snapshot built with other reward options is refused (``ValueError`` naming them): its
        memory would be read under settings it was not written with.
        """
        self.clean_leftovers()
        for path in reversed(self.snapshots()):
            try:
                meta = self.read_meta(path)
            except (OSError, ValueError) as exc:
                logger.error("snapshot %s is unreadable (%s); trying the one before", path, exc)
                continue
            diffs = _differences(meta.get("options", {}), json.loads(json.dumps(options, default=str)))
            if diffs:
                raise ValueError(f"{path} was written with other reward options ({'; '.join(diffs)}); start with "
                                 "the same options, or use another --state-dir")
            name = state_file_name(state)
            try:
                if name is not None:
                    state.load(path / name)
            except (OSError, ValueError, KeyError) as exc:
                logger.error("snapshot %s does not load (%s); trying the one before", path, exc)
                continue
            meta["path"] = str(path)
            return meta
        return None


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out
