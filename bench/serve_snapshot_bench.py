"""How long a ``memrl serve`` snapshot stalls serving, at the GSM8K preset's memory size.

What it measures (results -> bench/results/serve_snapshot.json):

A ``memrl serve`` process (Memory-R+, the ``gsm8k-qwen2.5-0.5b`` preset: two memories of N = 7,473
keys x L = 100 values x 384 dimensions, float32; 2.3 GB of vectors) is filled with random unit
vectors (``--fraction`` of the N keys, every key with its L values; no encoder needed for that),
then serves ``--clients`` client threads sending one-sample OpenRLHF requests of real GSM8K
questions and chains of thought (``--respond immediate``, a commit every ``--commit-every``
samples, so the memory is written while a snapshot is being taken). After ``--warm-s`` seconds a
``POST /snapshot`` asks for a snapshot; its answer comes once the snapshot is on disk and checked.
For each way of writing (``--snapshot-write fork``: a forked process writes a copy-on-write view,
the default; ``inline``: the worker writes it, the way every snapshot was written before):

* the pause: how long the worker thread, which serves every request, was held by the snapshot
  (``/stats`` ``snapshots.last_write.pause_s``); and the clients' view of it: the longest request
  latency and the longest gap between two answers while the snapshot was being written, next to
  the same before it;
* the snapshot's duration (request to durable, checked snapshot) and the bytes it wrote;
* memory: the proportional set size (PSS) of the server and its children, at rest and at its
  peak during the snapshot (a forked writer shares the parent's pages until one side writes).

Each mode gets a fresh server and state dir. Latency is reported for three windows: before the
snapshot (``--warm-s``), during it, and after it (a control as long as the snapshot took, at most
``--after-max-s``): the machine is shared, and the control shows what its load alone does to the
clients over as long a time. The load average is recorded.
Before it starts the bench checks that the memory it needs is available (about 3x the vectors
for the writer's copies, plus the server) and refuses otherwise; ``--fraction`` scales the size.

Run: ``python bench/serve_snapshot_bench.py`` (full size: ~2.3 GB of vectors, several minutes on
2 cores); ``--fraction 0.1`` for a quick look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from memrl.runtime import setup_process  # noqa: E402

setup_process()

import numpy as np  # noqa: E402

from memrl.io import atomic_write_json  # noqa: E402
from memrl.serve.client import RewardClient  # noqa: E402

PRESET = "gsm8k-qwen2.5-0.5b"
PROMPT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
GUARD_BYTES = 2 * 1024**3  # kill the server when the machine has less memory available than this


# --------------------------------------------------------------------------- the server process
def fill_memory(memory, fraction: float, seed: int) -> dict:
    """Fill both memories with random unit vectors: ``fraction`` of their keys, each with its full
    list of values (what a long GSM8K run reaches). Returns the sizes."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for name in ("success_memory", "failure_memory"):
        m = getattr(memory, name)
        keys = max(1, round(m.max_keys * fraction))
        for k in range(keys):
            key = rng.standard_normal((1, m.dim), np.float32)
            values = rng.standard_normal((m.max_values, m.dim), np.float32)
            key /= np.linalg.norm(key)
            values /= np.linalg.norm(values, axis=1, keepdims=True)
            m.add([f"{name} bench question {k}"] * m.max_values, np.repeat(key, m.max_values, axis=0), values)
    s, f = memory.success_memory, memory.failure_memory
    return {"keys_per_memory": len(s), "values_per_key": s.max_values, "dim": s.dim,
            "max_keys": s.max_keys, "values": s.num_values + f.num_values, "vector_bytes": s.nbytes + f.nbytes,
            "fill_s": time.perf_counter() - t0}


def serve(args) -> None:
    # the machine is shared: if memory runs out, the kernel's OOM killer takes this server (and its
    # snapshot writer, which inherits this) before anyone else's work
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")
    from memrl.grpo.config import read_yaml_config
    from memrl.options import preset_path
    from memrl.serve.app import ServiceThread, build_service
    from memrl.serve.config import ServeConfig

    values = {**read_yaml_config(preset_path(PRESET, "grpo")), "method": "memory-r+"}
    config = ServeConfig(port=0, state_dir=args.state_dir, snapshot_write=args.snapshot_write,
                         commit_every=args.commit_every, snapshot_every=10**9, keep_snapshots=1)
    engine, app = build_service(values, config)
    sizes = fill_memory(engine.spec.memory, args.fraction, args.seed)
    with ServiceThread(app) as server:
        print(json.dumps({"url": server.url, **sizes}), flush=True)
        sys.stdin.read()  # until the bench closes our stdin (or kills us)


# --------------------------------------------------------------------------- the bench
def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` and every process it forked (pages shared between them
    are split, so the sum is the memory they take together)."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def requests_of(args) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    from rewards_bench import make_batch

    batch = make_batch(args.questions, args.completions, args.seed)
    out = []
    for q, c, a in zip(batch["question"], batch["completions"], batch["answer"]):
        prompt = PROMPT.format(question=q)
        out.append({"query": [prompt + c + "<|im_end|>"], "prompts": [prompt], "labels": [a]})
    return out


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest interval inside ``[start, end]`` without an answer."""
    points = [start] + sorted(t for t in times if start < t < end) + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def measure(mode: str, args, work: list[dict]) -> dict:
    state_dir = Path(tempfile.mkdtemp(prefix=f"serve-snapshot-bench-{mode}-", dir=args.tmp))
    cmd = [sys.executable, __file__, "--serve", "--snapshot-write", mode, "--state-dir", str(state_dir),
           "--fraction", str(args.fraction), "--commit-every", str(args.commit_every), "--seed", str(args.seed)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        print(f"[{mode}] filled {info['keys_per_memory']} keys x {info['values_per_key']} values x 2 memories "
              f"({info['vector_bytes'] / 1e9:.2f} GB) in {info['fill_s']:.0f}s", flush=True)
        client = RewardClient(info["url"], retries=0, timeout=1800)
        answers: list[tuple[float, float]] = []
        stop = threading.Event()
        errors: list[str] = []

        def load(k: int) -> None:
            i = k
            while not stop.is_set():
                body = work[i % len(work)]
                t0 = time.perf_counter()
                try:
                    client.request("POST", "/get_reward", body)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    errors.append(repr(exc)[:200])
                answers.append((t0, time.perf_counter()))
                i += args.clients

        memory = {"rest": pss_bytes(proc.pid), "peak": 0}

        def sample_memory() -> None:  # every 0.5 s: reading PSS walks the page tables of gigabytes
            while not stop.is_set():
                memory["peak"] = max(memory["peak"], pss_bytes(proc.pid))
                if available_bytes() < GUARD_BYTES:  # the machine is shared: stop before anyone runs out
                    proc.kill()
                    errors.append(f"stopped: less than {GUARD_BYTES / 1e9:.1f} GB of memory left")
                    stop.set()
                time.sleep(0.5)

        threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.warm_s)
        rest = pss_bytes(proc.pid)
        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        snap_start = time.perf_counter()
        snapshot = client.snapshot()
        snap_end = time.perf_counter()
        stats = client.stats()
        # a control window as long as the snapshot took (at most --after-max-s): the same load, no snapshot
        time.sleep(min(snap_end - snap_start, args.after_max_s))
        after_end = time.perf_counter()
        stop.set()
        for t in threads + [sampler]:
            t.join(timeout=600)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        shutil.rmtree(state_dir, ignore_errors=True)
    warm_start = min(a for a, _ in answers) + 1.0  # the first second: connections, first encodings
    write = stats["snapshots"]["last_write"]
    result = {
        "mode": mode, "sizes": info,
        "worker_pause_s": write["pause_s"],
        "snapshot_s": snap_end - snap_start, "write_s": write["seconds"], "bytes_written": snapshot["bytes"],
        "before": window(answers, warm_start, snap_start),
        "during": window(answers, snap_start, snap_end),
        "after": window(answers, snap_end, after_end),
        "memory_pss_bytes": {"rest": rest, "peak_during_snapshot": memory["peak"]},
        "commits": stats["commits"], "errors": errors[:5], "error_count": len(errors),
    }
    windows = "; ".join(f"{name} {w['seconds']:.0f}s: latency p50/p99/max {w['latency_ms_p50']:.0f}/"
                        f"{w['latency_ms_p99']:.0f}/{w['latency_ms_max']:.0f} ms, longest gap "
                        f"{w['longest_gap_ms']:.0f} ms, {w['answers_per_s']:.1f} answers/s"
                        for name in ("before", "during", "after") for w in [result[name]])
    print(f"[{mode}] snapshot {result['snapshot_s']:.1f}s, {result['bytes_written'] / 1e9:.2f} GB; worker paused "
          f"{result['worker_pause_s']:.3f}s; {windows}; PSS {rest / 1e9:.2f} -> {memory['peak'] / 1e9:.2f} GB",
          flush=True)
    return result


def window(answers: list[tuple[float, float]], start: float, end: float) -> dict:
    """Latency of the requests answered in ``[start, end]`` (a request still running at ``end``
    counts with the time it had waited then), the longest gap between answers, answers per second."""
    done = [b - a for a, b in answers if start < b <= end]
    running = [end - a for a, b in answers if a < end < b]
    ms = np.array(done + running) * 1000
    return {"seconds": end - start, "answers": len(done), "answers_per_s": len(done) / (end - start),
            "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p99": float(np.percentile(ms, 99)),
            "latency_ms_max": float(ms.max()), "longest_gap_ms": 1000 * longest_gap([b for _, b in answers], start, end)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, default=1.0, help="fraction of the preset's N keys filled")
    p.add_argument("--modes", nargs="+", default=["fork", "inline"], choices=["fork", "inline"])
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--commit-every", type=int, default=64)
    p.add_argument("--questions", type=int, default=64)
    p.add_argument("--completions", type=int, default=8)
    p.add_argument("--warm-s", type=float, default=20.0, help="serving before the snapshot (the baseline)")
    p.add_argument("--after-max-s", type=float, default=300.0,
                   help="longest control window after the snapshot (it lasts as long as the snapshot took)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="where the state dirs go (default: the system's temp folder)")
    p.add_argument("--out", default="bench/results/serve_snapshot.json")
    # the server process
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", help=argparse.SUPPRESS)
    p.add_argument("--snapshot-write", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    vectors = 2 * round(7473 * args.fraction) * 100 * 384 * 4
    # the server's vectors, a writer's copies of one memory (state dict, archive, its bytes), the rest
    need = 3 * vectors + GUARD_BYTES + 1024**3
    if available_bytes() < need:
        raise SystemExit(f"this needs about {need / 1e9:.1f} GB of memory, {available_bytes() / 1e9:.1f} GB are "
                         "available: run with a smaller --fraction")
    work = requests_of(args)
    load_start = os.getloadavg()
    results = [measure(mode, args, work) for mode in args.modes]
    out = {
        "preset": PRESET, "fraction": args.fraction, "clients": args.clients, "commit_every": args.commit_every,
        "results": results,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "transparent_hugepages": Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
        if Path("/sys/kernel/mm/transparent_hugepage/enabled").exists() else None,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
