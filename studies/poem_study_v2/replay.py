"""Replay POEM read rules on the POEM study's saved pairs (no LM, no refit; seconds).

For every pair of the study's ``results/results.json`` that saved its arrays (``results/arrays/``:
every pair from piqa/13 on, and the earlier ones backfilled, all but agnews/13), first checks that the replay reproduces the recorded test predictions of the ``poem``,
``poem_paper`` and ``poem_guarded`` rows (refuses to report otherwise), then scores the
settings asked for.

Usage:
    python studies/poem_study_v2/replay.py                                  # the check, and each pair's rows
    python studies/poem_study_v2/replay.py --setting identity,correct,all,sum,1   # one more setting on every pair
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from memrl.poem.matrix import Setting
from memrl.poem.replay import Replay

RESULTS = Path(__file__).resolve().parent / "results" / "results.json"
REPLAYED = ("poem", "poem_paper", "poem_guarded")


def parse_setting(text: str) -> Setting:
    parts = text.split(",")
    if len(parts) != 5:
        raise SystemExit(f"--setting {text!r}: expected encoding,reward,k,read,shrink (e.g. identity,correct,all,sum,1)")
    enc, reward, k, read, shrink = parts
    return Setting(enc, reward, k if k == "all" else int(k), read, float(shrink))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--setting", action="append", default=[], type=parse_setting,
                    help="encoding,reward,k,read,shrink; repeatable")
    args = ap.parse_args(argv)
    runs = [r for r in json.loads(args.results.read_text())["runs"] if "arrays" in r]
    if not runs:
        print(f"{args.results}: no pair saved its arrays yet")
        return 0
    header = ["pair", *REPLAYED, *(str(s) for s in args.setting)]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for run in runs:
        arrays = args.results.parent / run["arrays"]  # recorded relative to the results file's folder
        replay = Replay.load(arrays)
        if list(replay.test_gold) != run["gold"]:
            raise SystemExit(f"{arrays}: test gold labels differ from {args.results}'s {run['task']}/{run['seed']}")
        cells = []
        for name in REPLAYED:
            rec = run["methods"].get(name)
            if rec is None:
                cells.append("–")
                continue
            try:
                pred = replay.predictions(Setting(**rec["setting"]))
            except ValueError:  # a rank code realised an order outside the sampled candidates
                cells.append(f"{100 * rec['accuracy']:.1f} (not replayable: orders outside the scored ones)")
                continue
            if list(pred) != rec["predictions"]:
                raise SystemExit(f"{run['task']}/{run['seed']} {name}: the replay's predictions differ from the "
                                 f"recorded ones on {int(np.sum(pred != np.array(rec['predictions'])))} items")
            cells.append(f"{100 * rec['accuracy']:.1f} (reproduced)")
        for setting in args.setting:
            try:
                cells.append(f"{100 * replay.accuracy(setting):.1f}")
            except ValueError:
                cells.append("not replayable")
        print(f"| {run['task']}/{run['seed']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
