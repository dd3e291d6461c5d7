"""``memrl demo``: score real SmolLM2 completions with every reward, as a table.

Generates a few completions per arithmetic question with the tiny LLM, then scores them over two
rounds with the R1 rewards (outcome + format) and Memory-R+ (exploit, explore): round 1 fills the
memories, round 2 reads them, so the exploit/explore columns show real values.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from memrl.names import PROMPT_STYLES


def add_demo_subparser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="score a few real SmolLM2 completions with outcome, format and Memory-R+ rewards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="smollm2-135m", help="hub id, local folder or alias (default: offline SmolLM2-135M-Instruct)")
    p.add_argument("--questions", type=int, default=3, help="arithmetic questions (default 3)")
    p.add_argument("--completions", type=int, default=4, help="completions per question and round (default 4)")
    p.add_argument("--level", type=int, default=1, help="arith difficulty 1..4 (default 1: bare sums)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--style", default="think", choices=PROMPT_STYLES)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from transformers import TrainerState

    from memrl.encoders import Encoder
    from memrl.lm.loading import generate, load_model
    from memrl.rewards import MemoryRPlus, r1_rewards
    from memrl.runtime import set_seed
    from memrl.tasks.arith import generate_problems
    from memrl.tasks.math import make_messages

    set_seed(args.seed)
    t0 = time.perf_counter()
    print(f"loading {args.model} and the encoder ...", flush=True)
    model, tokenizer = load_model(args.model)
    encoder = Encoder()
    problems = generate_problems(args.questions, level=args.level, seed=args.seed)
    prompts = [make_messages(p["question"], style=args.style) for p in problems]
    r1 = r1_rewards(args.style)
    memory = MemoryRPlus(encoder=encoder, memory_style=args.style, memory_explore_warmup_steps=1)

    for round_no in (0, 1):
        print(f"\nround {round_no + 1}: generating {args.questions} x {args.completions} completions "
              f"(T={args.temperature}, ≤{args.max_new_tokens} tokens) ...", flush=True)
        outs = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, num_return_sequences=args.completions,
                        seed=args.seed + round_no, progress=True)
        idx = [o["prompt_index"] for o in outs]
        state = TrainerState()
        state.global_step = round_no
        kwargs = dict(
            prompts=[prompts[i] for i in idx],
            completions=[[{"role": "assistant", "content": o["text"]}] for o in outs],
            completion_ids=[o["token_ids"] for o in outs],
            question=[problems[i]["question"] for i in idx],
            answer=[problems[i]["answer"] for i in idx],
            trainer_state=state,
        )
        scores = {r.__name__: r(**kwargs) for r in r1}
        scores["memory_exploit_reward"] = memory.exploit_reward(**kwargs)
        scores["memory_explore_reward"] = memory.explore_reward(**kwargs)
        _print_table(outs, problems, scores)
        note = "memories empty: neutral exploit 0 / explore off during warm-up" if round_no == 0 else \
            "scored against round 1's memories, then written"
        print(f"  ({note}; memory now: {memory})")
    print(f"\ndone in {time.perf_counter() - t0:.0f}s")
    return 0


def _print_table(outs: list[dict], problems: list[dict], scores: dict[str, list[float]]) -> None:
    columns = [("correct", "correctness_reward"), ("xml", "xmlcount_reward"), ("soft", "soft_format_reward"),
               ("strict", "strict_format_reward"), ("int", "int_answer_reward"),
               ("exploit", "memory_exploit_reward"), ("explore", "memory_explore_reward")]
    header = f"  {'question':<22} {'gold':>5} {'tok':>4}  " + " ".join(f"{c:>7}" for c, _ in columns) + "  completion"
    print(header)
    print("  " + "-" * (len(header) + 20))
    for j, o in enumerate(outs):
        p = problems[o["prompt_index"]]
        q = p["question"] if len(p["question"]) <= 22 else p["question"][:19] + "..."
        text = " ".join(o["text"].split())
        text = text if len(text) <= 48 else text[:45] + "..."
        vals = " ".join(f"{scores[name][j]:>7.3f}" for _, name in columns)
        print(f"  {q:<22} {p['answer']:>5} {len(o['token_ids']):>4}  {vals}  {text}")
