"""``memrl poem fit|eval``: fit a POEM memory, or compare POEM with the baselines.

The lead wires :func:`add_poem_subparser` into ``memrl.cli``; ``python -m memrl.poem.cli`` runs
the same commands standalone. PoemConfig options come from the dataclass (with its help texts);
``--config file.yaml`` sets their defaults and the command line overrides them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from memrl.options import add_dataclass_arguments, given_values, preset_names, preset_path, read_yaml_mapping
from memrl.poem.config import PRESET_FAMILY, PoemConfig

logger = logging.getLogger(__name__)

CFG_PREFIX = "cfg_"  # PoemConfig flags land in args.cfg_<field>, apart from the command's own flags


def _csv(kind: type) -> Any:
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
    return parse


def _verbalizer(text: str) -> dict[str, str]:
    """``"0=terrible,1=great"`` -> ``{"0": "terrible", "1": "great"}`` (order kept)."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        label, eq, word = item.partition("=")
        if not eq or not label.strip() or not word.strip():
            raise argparse.ArgumentTypeError(f"--verbalizer expects LABEL=WORD pairs separated by commas, got {item!r}")
        if label.strip() in out:
            raise argparse.ArgumentTypeError(f"--verbalizer names label {label.strip()!r} twice")
        out[label.strip()] = word.strip()
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="LM for the transformers backend (alias, hub id or folder)")
    p.add_argument("--backend", choices=("hf", "openai"), default="hf",
                   help="'hf': local transformers model; 'openai': an OpenAI-compatible completions server")
    p.add_argument("--base-url", default=None, help="server root for --backend openai, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2", help="sentence encoder")
    p.add_argument("--batch-size", type=int, default=16, help="suffixes per LM forward pass")
    p.add_argument("--config", "--preset", dest="config", default=None,
                   help=f"YAML file or shipped preset ({', '.join(preset_names(PRESET_FAMILY))}) with PoemConfig "
                        "values; 'paper' is the paper's exact setting (rank encoding, fixed settings)")
    p.add_argument("--train-file", default=None, help="with --task local: CSV/TSV/JSONL training file")
    p.add_argument("--test-file", default=None, help="with --task local: CSV/TSV/JSONL test file")
    p.add_argument("--text-column", default="text", help="with --task local: text column")
    p.add_argument("--label-column", default="label", help="with --task local: label column")
    p.add_argument("--verbalizer", type=_verbalizer, default=None, metavar="LABEL=WORD,...",
                   help="with --task local: the answer word scored for each label value, in label order, "
                        "e.g. '0=terrible,1=great' (default: the label values themselves)")
    p.add_argument("--template", default=None, metavar="TEXT",
                   help="with --task local: the query template with {text} (and {text_b}); it ends where the "
                        r"answer word goes, e.g. 'Review: {text}\nSentiment:' (\n is a newline; "
                        "default: 'Input: {text}\\nLabel:')")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (1 is fastest on a small machine shared with other jobs)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    # PoemConfig.seed (demonstration draw, order sampling) is --poem-seed: --seed is the data seed
    add_dataclass_arguments(p, PoemConfig, title="POEM options (PoemConfig)", dest_prefix=CFG_PREFIX,
                            rename={"seed": "--poem-seed"})


def add_poem_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``poem`` command (``fit`` and ``eval``) to an argparse subparsers object."""
    poem = subparsers.add_parser("poem", help="POEM: per-query few-shot ordering from episodic memory",
                                 description=__doc__)
    sub = poem.add_subparsers(dest="poem_command", required=True)
    fit = sub.add_parser("fit", help="fit a POEM memory on a task's training split and save it")
    fit.add_argument("--task", required=True, help="task name (sst2, mr, sst5, subj, trec, agnews, rte, cb, piqa, ...) or 'local'")
    fit.add_argument("--seed", type=int, default=13, help="data seed of the 16-shot split")
    fit.add_argument("--out", required=True, help="folder to write the fitted optimiser to")
    _add_common(fit)
    fit.set_defaults(func=_cmd_fit)
    ev = sub.add_parser("eval", help="evaluate POEM vs the baselines; print a table, write JSON/Markdown/PNG")
    ev.add_argument("--tasks", type=_csv(str), required=True, help="comma-separated task names")
    ev.add_argument("--seeds", type=_csv(int), default=[13], help="comma-separated data seeds")
    ev.add_argument("--max-test", type=int, default=500, help="seeded test subsample per task (0 = full test set)")
    ev.add_argument("--methods", type=_csv(str), default=None, help="comma-separated subset of methods")
    ev.add_argument("--min-probes", type=int, default=48, help="GlobalE/LocalE probe set: samples drawn under "
                    "every candidate order until at least this many distinct probe texts")
    ev.add_argument("--load", default=None, help="use this fitted optimiser (one task and seed) instead of fitting")
    ev.add_argument("--out", required=True, help="folder for results.json, results.md, accuracy.png")
    _add_common(ev)
    ev.set_defaults(func=_cmd_eval)
    return poem


def _config(args: argparse.Namespace) -> PoemConfig:
    data: dict[str, Any] = {}
    if args.config:
        data.update(read_yaml_mapping(preset_path(args.config, PRESET_FAMILY), PRESET_FAMILY))
        PoemConfig.from_dict(data, source=args.config)  # reject unknown keys early, by name
    data.update(given_values(args, PoemConfig, dest_prefix=CFG_PREFIX))
    return PoemConfig.from_dict(data)


def _components(args: argparse.Namespace) -> tuple[Any, Any]:
    from memrl.encoders import Encoder
    from memrl.runtime import setup_process

    setup_process(args.threads)

    if args.backend == "openai":
        from memrl.lm import OpenAICompletionsScorer

        if not args.base_url:
            raise ValueError("--backend openai needs --base-url")
        scorer: Any = OpenAICompletionsScorer(args.base_url, args.model, batch_size=args.batch_size)
    else:
        from memrl.lm import HFScorer

        scorer = HFScorer.from_name(args.model, batch_size=args.batch_size)
    return scorer, Encoder(args.encoder)


def _task(args: argparse.Namespace, name: str, seed: int) -> Any:
    from memrl.tasks.classification import load_local_task, load_task
    from memrl.tasks.fewshot import PromptTemplate

    if name == "local":
        if not (args.train_file and args.test_file):
            raise ValueError("--task local needs --train-file and --test-file")
        template = None
        if args.template is not None:
            text = args.template.replace("\\n", "\n")
            if "{text}" not in text:
                raise ValueError(f"--template must contain {{text}} where the input goes, got {args.template!r}")
            template = PromptTemplate(input=text)
        verbalizer = args.verbalizer or {}
        return load_local_task(args.train_file, args.test_file, text_column=args.text_column,
                               label_column=args.label_column, labels=list(verbalizer) or None,
                               verbalizer=list(verbalizer.values()) or None, template=template)
    if args.verbalizer or args.template:
        raise ValueError(f"--verbalizer and --template apply to --task local; {name!r} has its own prompt")
    return load_task(name, seed)


def _cmd_fit(args: argparse.Namespace) -> int:
    from memrl.poem import PoemOptimizer

    config = _config(args)
    task = _task(args, args.task, args.seed)  # data and names checked before the model loads
    scorer, encoder = _components(args)
    opt = PoemOptimizer(task, scorer, encoder, config)
    report = opt.fit(progress=not args.no_progress)
    path = opt.save(args.out)
    print(f"fitted POEM on {task.name} (seed {task.seed}): {report.inputs} inputs, {report.trials} trials, "
          f"{report.lm_calls} LM calls, {report.wall_s:.1f} s, mean reward {report.mean_reward:.3f}")
    for cost in report.costs.values():
        tokens = "" if cost.forward_tokens is None else f", {cost.forward_tokens} tokens run"
        print(f"  {cost.source} demonstrations: {cost.orders_per_input} orders per input, {cost.lm_calls} LM calls "
              f"({cost.prompts} distinct prompts{tokens}), {cost.wall_s:.1f} s, {cost.ms_per_call:.0f} ms per call")
    if report.selection is not None:
        sel = report.selection
        print(f"the one-SE rule chose {sel.candidate}: {sel.estimate:.3f} on fit inputs it was not chosen on "
              f"(nested {sel.folds}-fold cross-validation; its own leave-one-out {sel.loo_accuracy:.3f}, the best "
              f"of {sel.candidates_scored} candidates {sel.loo_best:.3f}; 0 LM calls)")
    elif report.loo is not None:
        print(f"leave-one-out chose {report.setting} (accuracy {report.loo.accuracy:.3f} over "
              f"{report.loo.n_inputs} inputs, {len(report.loo.table)} settings scored, 0 LM calls)")
    else:
        print(f"setting: {report.setting}")
    print(f"saved to {path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from memrl.poem import PoemOptimizer
    from memrl.poem.evaluate import METHODS, evaluate_task
    from memrl.poem.report import aggregate, text_table, write_report

    config = _config(args)
    methods = args.methods or list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.min_probes < 1:
        raise ValueError(f"--min-probes must be >= 1, got {args.min_probes}")
    # every task's data is read and checked before the model loads (minutes for nothing otherwise)
    tasks = [_task(args, name, seed) for name in args.tasks for seed in args.seeds]
    scorer, encoder = _components(args)
    runs = []
    t0 = time.perf_counter()
    for task in tasks:
        opt = PoemOptimizer.load(args.load, task, scorer, encoder) if args.load else None
        # a loaded optimiser brings its own settings; the fit flags apply to a fresh fit only
        runs.append(evaluate_task(task, scorer, encoder, None if opt else config, methods=methods,
                                  max_test=args.max_test or None, min_probes=args.min_probes,
                                  progress=not args.no_progress, optimizer=opt))
    paths = write_report(args.out, runs, {"wall_s": time.perf_counter() - t0})
    table = aggregate(runs)
    print(text_table(table))
    print()
    print(f"{'method':<14}{'LM calls fit':>14}{'select':>10}{'eval':>10}{'wall s':>10}")
    for m in methods:
        rows = [per[m] for per in table.values() if m in per]
        if rows:
            print(f"{m:<14}{sum(r['lm_calls_fit'] for r in rows) / len(rows):>14.0f}"
                  f"{sum(r['lm_calls_select'] for r in rows) / len(rows):>10.0f}"
                  f"{sum(r['lm_calls_eval'] for r in rows) / len(rows):>10.0f}"
                  f"{sum(r['wall_s'] for r in rows) / len(rows):>10.1f}")
    print(f"\nwrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m memrl.poem.cli poem fit ...``."""
    parser = argparse.ArgumentParser(prog="memrl")
    add_poem_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:  # user-facing: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
