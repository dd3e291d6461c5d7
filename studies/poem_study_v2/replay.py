"""Replay POEM read rules on the POEM study's saved pairs (no LM, no refit; seconds).

For every pair of the study's ``results/results.json`` that saved its arrays (``results/arrays/``:
every pair from piqa/13 on, and the earlier ones backfilled, all but agnews/13), first checks that the replay reproduces the recorded test predictions of the ``poem``,
``poem_paper`` and ``poem_guarded`` rows (refuses to report otherwise), then scores the
settings asked for.

Then (issue 28) a second table: per pair, the setting each selection rule chooses on the fit
inputs, the rule's honest estimate (nested cross-validation on the fit inputs), its own and the best
leave-one-out accuracy, and the chosen setting's test accuracy. EXPLORATORY: these seeds' test items
were seen before the rules were written; only the estimate column uses fit inputs alone.

Usage:
    python studies/poem_study_v2/replay.py                                  # the check, and each pair's rows
    python studies/poem_study_v2/replay.py --setting identity,correct,all,sum,1   # one more setting on every pair
    python studies/poem_study_v2/replay.py --no-rules                       # without the selection-rule table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from memrl.poem import Setting
from memrl.poem.replay import Replay

RESULTS = Path(__file__).resolve().parent / "results" / "results.json"
REPLAYED = ("poem", "poem_paper", "poem_guarded")
RULES = ("best", "one_se")  # memrl.poem.selection.RULES: leave-one-out's best, and the one-SE rule


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
    ap.add_argument("--no-rules", action="store_true", help="skip the table of selection rules (minutes on 2 cores)")
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
    if not args.no_rules:
        print_rules(args.results, runs)
    return 0


def print_rules(results: Path, runs: list[dict]) -> None:
    """Per pair and selection rule: the choice on the fit inputs, its honest estimate beside its
    test accuracy (exploratory: these test items were seen before the rules were written)."""
    print("\nSelection rules (issue 28). Estimate = nested 5-fold cross-validation of the whole selection on the "
          "fit inputs; test = the chosen setting on the pair's test items, EXPLORATORY (seeds 13/21 were seen "
          "before the rules were written).\n")
    print("| pair | rule | chosen setting | estimate (fit inputs) | its LOO | best LOO | test | estimate − test |\n"
          "|---|---|---|---|---|---|---|---|")
    for run in runs:
        replay = Replay.load(results.parent / run["arrays"])
        for rule in RULES:
            choice = replay.held_out_choice(rule)
            try:
                test = replay.choice_accuracy(choice)
                cells = f"{100 * test:.1f} | {100 * (choice.estimate - test):+.1f}"
            except ValueError:  # a rank code realised an order outside the scored ones
                cells = "not replayable | –"
            print(f"| {run['task']}/{run['seed']} | {rule} | {choice.candidate} | {100 * choice.estimate:.1f} | "
                  f"{100 * choice.loo_accuracy:.1f} | {100 * choice.loo_best:.1f} | {cells} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
