"""Snapshots of the service's committed state in ``--state-dir``: writing (in the request path or
in a forked process), checking, finding the newest good one at start, quarantining bad ones,
pruning old ones.

Layout: one folder per snapshot, ``snapshot-<number, 8 digits>/``, holding ``service.json`` (the
snapshot's number, the step, the counters, the reward options the state was built with, and the
size of every file in the folder) and the reward state as its own ``save`` writes it
(``memory/`` for Memory-R/Memory-R+, ``outcome_counts.json`` for outcome-ucb; nothing for
stateless methods).

Numbers are never reused: each snapshot takes one more than the highest number found in the
folder at start or since (complete, quarantined, or a leftover of an interrupted write), so a
name always means one state. (Numbering by commit count, as before, let a restart that fell back
from a corrupt ``snapshot-10`` to 9 name its next snapshot 10 again, and that write was skipped
as "already there".)

Writing: a snapshot is written in a temporary folder beside it and renamed into place
(:func:`memrl.io.atomic_dir`), so a kill at any moment leaves either the previous snapshots or
the new one complete; leftovers of an interrupted write (``.snapshot-*``) are removed at the next
start. After the rename it is checked (:meth:`SnapshotStore.verify`: every file of its manifest
there with its size, every ``.npz`` passes its CRC check, every JSON file parses); one that fails
is quarantined and the write counts as failed.

At start the newest snapshot is checked and loaded; one that fails either (a truncated file, a
foreign format) is **quarantined**: renamed ``snapshot-<n>.corrupt`` (kept for inspection, never
loaded or reused again) and logged, and the one before it is tried. A snapshot written with other
reward options is not corrupt: the start is refused, naming the options that differ.

Off the request path (:class:`BackgroundWrite`): ``os.fork()`` gives a child process a
copy-on-write view of the whole state at the instant of the fork, which costs a copy of the page
tables (0.17 s for a 3 GB service, ``bench/serve_snapshot_bench.py``) instead of a copy of the
state; the child writes and checks the snapshot
with the state's own ``save`` and exits, while the parent keeps serving and writing its memory
(the kernel copies only the pages the parent changes meanwhile). Redis writes its snapshots the
same way. The child only calls ``save`` (numpy, JSON and file I/O), never the encoder, the HTTP
server or a lock another thread may have held at the fork, and leaves with ``os._exit``; logging
is off in it (a stream lock may have been held by another thread at the fork), and on Linux it
dies with the process that forked it (``PR_SET_PDEATHSIG``), so a kill -9 of the service never
leaves a writer behind.

Snapshots hold the *committed* state only: samples of a step not yet committed are not saved.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

from memrl.io import atomic_dir, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_NAME = "memrl.serve_snapshot"
FORMAT_VERSION = 1
_NAME = re.compile(r"snapshot-(\d{8,})$")
_ANY_NUMBERED = re.compile(r"\.?snapshot-(\d{8,})")  # complete, quarantined, or a temporary folder
QUARANTINE_SUFFIX = ".corrupt"
# fault injection for tests: "SECONDS" or "SECONDS:FROM" pauses inside the temporary folder, before
# the rename, when writing the snapshot of commit FROM or later (a kill -9 test kills it there)
PAUSE_ENV = "MEMRL_SERVE_SNAPSHOT_PAUSE_S"
CAN_FORK = hasattr(os, "fork")
_REPORT_BYTES = 8192  # a child's report (JSON) fits a pipe's buffer, so the child never blocks on it
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None  # loaded before any fork


class StateDirError(OSError):
    """``--state-dir`` cannot be used: it cannot be created or written."""


class SnapshotCorrupt(ValueError):
    """A snapshot folder fails its check (a file missing, short, or unreadable)."""


@dataclass
class WriteResult:
    """What one snapshot write did: its number, the commits it holds, and either its folder, size
    and duration, or the error that stopped it."""

    number: int
    commits: int
    path: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _test_pause(commits: int) -> None:
    value = os.environ.get(PAUSE_ENV, "")
    if value:
        seconds, _, start = value.partition(":")
        if commits >= int(start or 0):
            time.sleep(float(seconds))


def describe_error(exc: BaseException) -> str:
    """One line for an operator: the exception's class and message (``OSError: [Errno 28] ...``)."""
    return f"{type(exc).__name__}: {exc}"


def state_file_name(state: Any) -> str | None:
    """Where ``state`` is saved inside a snapshot folder (None: the method holds no state)."""
    from memrl.rewards.exploration import OutcomeUCBReward
    from memrl.rewards.memory_rewards import MemoryRPlus

    if isinstance(state, MemoryRPlus):
        return "memory"
    if isinstance(state, OutcomeUCBReward):
        return "outcome_counts.json"
    return None


def _manifest(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative POSIX path) with its size in bytes."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SnapshotStore:
    """Snapshots of one service in ``root`` (see the module docstring).

    Raises :class:`StateDirError` (naming the folder) when ``root`` cannot be created or written:
    a service must not start, take hours of training samples, and only then find that it cannot
    save them.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            atomic_write_text(probe, "memrl serve checks that it can write here\n")
            probe.unlink()
        except OSError as exc:
            raise StateDirError(f"--state-dir {self.root} cannot be written ({describe_error(exc)}); give a folder "
                                "this process can create files in") from None
        self._floor = self.highest_number()  # numbers on disk at start, leftovers included, are never reused
        self.quarantined: list[str] = []

    # ------------------------------------------------------------------ names
    def snapshots(self) -> list[Path]:
        """Complete snapshot folders, oldest first."""
        found = [p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def highest_number(self) -> int:
        """The highest snapshot number in the folder, whatever its state (0: none)."""
        numbers = [int(m.group(1)) for p in self.root.iterdir() if (m := _ANY_NUMBERED.match(p.name))]
        return max(numbers, default=0)

    def next_number(self) -> int:
        """A number no snapshot of this folder has had: one more than any on disk now or at start
        (complete, quarantined, or a leftover). A write that failed and left nothing behind
        (its temporary folder removed) did not use its number; the next try takes it again."""
        return max(self._floor, self.highest_number()) + 1

    def path_of(self, number: int) -> Path:
        return self.root / f"snapshot-{number:08d}"

    def clean_leftovers(self, number: int | None = None) -> list[str]:
        """Remove temporary folders of interrupted writes (of snapshot ``number`` only, when
        given); returns their names."""
        prefix = ".snapshot-" if number is None else f".snapshot-{number:08d}."
        removed = []
        for p in self.root.iterdir():
            if p.name.startswith(prefix):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        if removed:
            logger.warning("removed leftovers of an interrupted snapshot in %s: %s", self.root, ", ".join(removed))
        return removed

    def quarantine(self, path: Path, reason: str) -> Path:
        """Rename a bad snapshot out of the way (``<name>.corrupt``), so that it is never loaded
        or overwritten again but stays for inspection."""
        dest = path.with_name(path.name + QUARANTINE_SUFFIX)
        n = 1
        while dest.exists():
            n += 1
            dest = path.with_name(f"{path.name}{QUARANTINE_SUFFIX}-{n}")
        os.replace(path, dest)
        self.quarantined.append(str(dest))
        logger.error("snapshot %s is corrupt (%s); moved it to %s", path, reason, dest)
        return dest

    # ------------------------------------------------------------------ write
    def write(self, state: Any, meta: dict[str, Any], number: int) -> WriteResult:
        """Write snapshot ``number`` of ``state`` with ``meta`` (must hold ``commits``), check it,
        prune old ones; returns what was written. Raises on any failure (the folder then holds
        no new snapshot: the temporary folder is removed, a snapshot failing its check is
        quarantined)."""
        t0 = time.perf_counter()
        target = self.path_of(number)
        if any(_ANY_NUMBERED.match(p.name) and int(_ANY_NUMBERED.match(p.name).group(1)) == number
               for p in self.root.iterdir()):
            raise FileExistsError(f"snapshot number {number} was used before in {self.root}; numbers are never reused")
        record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "number": number, "saved_at": time.time(), **meta}
        with atomic_dir(target) as tmp:
            name = state_file_name(state)
            if name is not None:
                state.save(tmp / name)
            record["files"] = _manifest(tmp)
            atomic_write_text(tmp / "service.json", json.dumps(record, indent=2, default=str))
            _test_pause(int(meta["commits"]))
        _fsync_dir(self.root)
        try:
            self.verify(target)
        except (OSError, ValueError) as exc:
            dest = self.quarantine(target, f"it failed its check right after writing: {describe_error(exc)}")
            raise SnapshotCorrupt(f"{target} failed its check right after writing ({describe_error(exc)}); "
                                  f"moved it to {dest}") from None
        for old in self.snapshots()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        size = sum(record["files"].values()) + (target / "service.json").stat().st_size
        return WriteResult(number, int(meta["commits"]), str(target), size, time.perf_counter() - t0)

    def write_result(self, state: Any, meta: dict[str, Any], number: int) -> WriteResult:
        """:meth:`write`, with a failure returned as ``WriteResult.error`` instead of raised."""
        t0 = time.perf_counter()
        try:
            return self.write(state, meta, number)
        except Exception as exc:  # any failure of a write is reported, none may stop the service
            return WriteResult(number, int(meta["commits"]), seconds=time.perf_counter() - t0,
                               error=describe_error(exc))

    # ------------------------------------------------------------------ check and load
    @staticmethod
    def read_meta(path: Path) -> dict[str, Any]:
        meta = json.loads((path / "service.json").read_text())
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise SnapshotCorrupt(f"{path} is not a memrl serve snapshot of version {FORMAT_VERSION}")
        return meta

    @staticmethod
    def check_files(path: Path, meta: dict[str, Any]) -> None:
        """Every file of the snapshot's manifest is there with its size (snapshots written
        before manifests existed pass)."""
        for rel, size in (meta.get("files") or {}).items():
            p = path / rel
            if not p.is_file():
                raise SnapshotCorrupt(f"{p} is missing")
            if p.stat().st_size != size:
                raise SnapshotCorrupt(f"{p} has {p.stat().st_size} bytes, {size} were written")

    def verify(self, path: Path) -> dict[str, Any]:
        """Check a snapshot folder completely: its ``service.json``, the manifest, the CRC of
        every member of every ``.npz`` and the syntax of every JSON file. Returns its meta."""
        meta = self.read_meta(path)
        self.check_files(path, meta)
        for p in sorted(path.rglob("*")):
            if p.suffix == ".npz":
                try:
                    with zipfile.ZipFile(p) as archive:
                        bad = archive.testzip()
                except zipfile.BadZipFile as exc:
                    raise SnapshotCorrupt(f"{p} is not a readable archive ({exc})") from None
                if bad is not None:
                    raise SnapshotCorrupt(f"{p}: member {bad} fails its CRC check")
            elif p.suffix == ".json" and p.is_file():
                try:
                    json.loads(p.read_text())
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise SnapshotCorrupt(f"{p} is not valid JSON ({exc})") from None
        return meta

    def load_latest(self, state: Any, options: dict[str, Any]) -> dict[str, Any] | None:
        """Load the newest good snapshot into ``state``; returns its meta (None: no snapshot).

        Snapshots that fail their check or do not load are quarantined. A snapshot built with
        other reward options is refused (``ValueError`` naming them): its memory would be read
        under settings it was not written with.
        """
        self.clean_leftovers()
        for path in reversed(self.snapshots()):
            try:
                meta = self.read_meta(path)
                self.check_files(path, meta)
            except (OSError, ValueError) as exc:
                self.quarantine(path, f"unreadable: {describe_error(exc)}")
                continue
            diffs = _differences(meta.get("options", {}), json.loads(json.dumps(options, default=str)))
            if diffs:
                raise ValueError(f"{path} was written with other reward options ({'; '.join(diffs)}); start with "
                                 "the same options, or use another --state-dir")
            name = state_file_name(state)
            try:
                if name is not None:
                    state.load(path / name)  # checks everything before it replaces anything
            except Exception as exc:  # any reason it does not load: not a state to resume from
                self.quarantine(path, f"does not load: {describe_error(exc)}")
                continue
            meta["path"] = str(path)
            return meta
        return None


class BackgroundWrite:
    """One snapshot being written by a forked child process (see the module docstring).

    :meth:`start` forks and returns at once; :meth:`poll` (None while the child runs) and
    :meth:`wait` give its :class:`WriteResult`.
    """

    def __init__(self, store: SnapshotStore, pid: int, report_fd: int, number: int, commits: int) -> None:
        self.store, self.pid, self.report_fd = store, pid, report_fd
        self.number, self.commits = number, commits
        self.started = time.monotonic()

    @classmethod
    def start(cls, store: SnapshotStore, state: Any, meta: dict[str, Any], number: int) -> BackgroundWrite:
        parent = os.getpid()
        read_fd, write_fd = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns on fork() in a threaded process: the child here runs no
                # code another thread may have been in (see the module docstring)
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            _write_in_child(store, state, meta, number, parent, read_fd, write_fd)
        os.close(write_fd)
        return cls(store, pid, read_fd, number, int(meta["commits"]))

    def poll(self) -> WriteResult | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else self._result(status)

    def wait(self) -> WriteResult:
        _, status = os.waitpid(self.pid, 0)
        return self._result(status)

    def _result(self, status: int) -> WriteResult:
        chunks = []
        while chunk := os.read(self.report_fd, _REPORT_BYTES):
            chunks.append(chunk)
        os.close(self.report_fd)
        code = os.waitstatus_to_exitcode(status)
        try:
            report = json.loads(b"".join(chunks))
        except ValueError:
            report = {}
        seconds = time.monotonic() - self.started
        if code == 0 and report.get("path"):
            return WriteResult(**{**report, "seconds": seconds})
        error = report.get("error") or (f"the snapshot process was killed by signal {-code} (out of memory?)"
                                        if code < 0 else f"the snapshot process exited with status {code}")
        self.store.clean_leftovers(self.number)
        return WriteResult(self.number, self.commits, seconds=seconds, error=error)


def _write_in_child(store: SnapshotStore, state: Any, meta: dict[str, Any], number: int, parent: int,
                    read_fd: int, write_fd: int) -> NoReturn:
    """The forked child: write the snapshot, report on the pipe, leave without running any of the
    parent's exit handlers."""
    code = 1
    report: dict[str, Any] = {"error": "the snapshot process stopped before it reported"}
    try:
        os.close(read_fd)
        logging.disable(logging.CRITICAL)
        gc.disable()  # no finalizer of the parent's objects (sockets, event loop) runs here
        with contextlib.suppress(OSError):
            os.nice(10)  # background work: the service's own threads come first for the CPU
        if _LIBC is not None:  # die with the service: a kill -9 must not leave a writer behind
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the service died before prctl took effect
            os._exit(1)
        report = asdict(store.write(state, meta, number))
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        report = {"error": describe_error(exc)[: _REPORT_BYTES // 2]}
    finally:
        try:
            os.write(write_fd, json.dumps(report).encode()[:_REPORT_BYTES])
        finally:
            os._exit(code)


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out
