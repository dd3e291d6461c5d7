"""The ``memrl`` command line.

Each command lives in its own module and registers an argparse sub-parser through an
``add_*_subparser(subparsers)`` function; modules keep heavy imports (torch, transformers, trl)
inside their run functions so ``memrl --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (module, function) pairs registering sub-commands, in help order. A module that is missing
# (an optional part not installed) is skipped rather than breaking the whole CLI.
_COMMANDS = (
    ("memrl.grpo.cli", "add_train_subparser"),
    ("memrl.grpo.cli", "add_eval_subparser"),
    ("memrl.grpo.cli", "add_report_subparser"),
    ("memrl.poem.cli", "add_poem_subparser"),
    ("memrl.demo", "add_demo_subparser"),
    ("memrl.serve.cli", "add_serve_subparser"),
)


def build_parser() -> argparse.ArgumentParser:
    from memrl.version import __version__

    parser = argparse.ArgumentParser(
        prog="memrl",
        description="Episodic memory for language models: Memory-R+ rewards for GRPO, POEM few-shot ordering.",
    )
    parser.add_argument("--version", action="version", version=f"memrl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, func_name in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module: surface it
                raise
            continue
        getattr(module, func_name)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from memrl.runtime import setup_process

    setup_process()  # before anything imports torch
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        # `memrl` alone runs the main job (a short Memory-R+ training run) when available.
        argv = ["train"] if "train" in parser._subparsers._group_actions[0].choices else ["--help"]  # type: ignore[union-attr]
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        # user-facing errors: one clear line, no traceback (use -v for the traceback)
        if args.verbose:
            raise
        print(f"memrl {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
