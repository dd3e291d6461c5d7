"""Upkeep of the second POEM study's results: replay arrays for pairs that ran before the study
saved them. Not part of the study's run path (``run.py``).

The pairs up to agnews/13 ran before each pair saved its ``results/arrays/<task>_<seed>.npz``.
This refits the default POEM of such a pair (the fit is deterministic) and checks that it chose the
recorded setting and that re-scoring gives the recorded POEM predictions and oracle accuracy (a
different instrument is refused), then keeps the test items' scores under every candidate order.
Every such pair but agnews/13 has been backfilled (8–12 min each on 2 cores)::

    python studies/poem_study_v2/maintenance.py --only agnews/13
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as study  # noqa: E402  (this study's run.py: its options, results file, instrument and saving)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    study.add_common_arguments(p)
    return p.parse_args(argv)


def refit_recorded(scorer: Any, encoder: Any, run: dict[str, Any]) -> tuple[Any, Any]:
    """Refit the default POEM of a finished pair (the fit is deterministic) and check that it chose
    the recorded setting; a different instrument is refused. Returns ``(task, optimiser)``."""
    from memrl.poem import PoemOptimizer
    from memrl.runtime import set_seed
    from memrl.tasks.classification import load_task

    name, seed = run["task"], run["seed"]
    set_seed(seed)
    task = load_task(name, seed)
    opt = PoemOptimizer(task, scorer, encoder, study.study_config())
    opt.fit(progress=False)
    if opt.setting.to_dict() != run["poem_fit"]["setting"]:
        raise SystemExit(f"{name}/{seed}: the refit chose {opt.setting}, the study recorded "
                         f"{run['poem_fit']['setting']}: not the instrument the pair ran with")
    return task, opt


def backfill_arrays(scorer: Any, encoder: Any, data: dict[str, Any], save: Any, out: Path, max_test: int,
                    budget_min: float, only: set[tuple[str, int]] | None = None) -> None:
    """Replay arrays for the pairs of ``data`` without them (with ``only``: those pairs), checked
    as the module docstring says; stops starting pairs after ``budget_min`` minutes."""
    from memrl.poem.evaluate import evaluate_task

    start = time.perf_counter()
    for run in data["runs"]:
        name, seed = run["task"], run["seed"]
        if "arrays" in run or (only is not None and (name, seed) not in only):
            continue
        if (time.perf_counter() - start) / 60 > budget_min:
            logging.info("time budget spent; arrays of %s/%s and later not backfilled", name, seed)
            break
        t0 = time.perf_counter()
        task, opt = refit_recorded(scorer, encoder, run)
        arrays: dict[str, np.ndarray] = {}
        res = evaluate_task(task, scorer, encoder, None, methods=["poem", "oracle"], max_test=max_test,
                            optimizer=opt, progress=False, arrays=arrays)
        m, rec = res["methods"], run["methods"]
        if (res["gold"] != run["gold"] or m["poem"]["predictions"] != rec["poem"]["predictions"]
                or m["oracle"]["accuracy"] != rec["oracle"]["accuracy"]):
            raise SystemExit(f"{name}/{seed}: re-scoring did not reproduce the recorded POEM predictions "
                             "and oracle accuracy")
        run["arrays"] = study.save_arrays(out, name, seed, arrays)
        run["arrays_backfilled_wall_s"] = time.perf_counter() - t0
        save()
        logging.info("%s/%s arrays backfilled in %.0f s", name, seed, run["arrays_backfilled_wall_s"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = study.open_results(args)
    scorer, encoder = study.instrument(args, data)
    only = study.parse_pairs(args.only) if args.only else None
    backfill_arrays(scorer, encoder, data, study.saver(args, data), args.out, args.max_test,
                    args.time_budget_min, only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
