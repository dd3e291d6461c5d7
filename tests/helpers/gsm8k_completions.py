"""Realistic GSM8K-style completions of four questions (right and wrong, tagged and not) and reward
calls built from them, as GRPO presents them (prompt-major): shared by the Memory-R+ tests."""

from __future__ import annotations

import numpy as np

from helpers.gsm8k_questions import PROBLEMS as Q  # noqa: E402  name -> (question, solution), from the shared data


def fmt(reasoning: str, answer: str) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n"


# right and wrong answers, with and without tags; exact-match success noted per line
COMPLETIONS = {
    "clips": [
        fmt("In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips.", "72"),            # right
        fmt("Half of 48 is 24, so April and May together give 48 + 24 = 72.", "72"),               # right
        fmt("She sold 48 clips in April and 48 in May, so 48 + 48 = 96.", "96"),                   # wrong
        "72",                                                                                     # right (bare)
        fmt("48 / 2 = 24 clips in May, 72 in total.", "72 clips"),                                 # wrong (exact)
        "Natalia sold 48 clips, then half of that, 24. In total she sold 72 clips.",              # wrong (no tags)
        "<think>48 + 24 = 72</think><answer>72</answer>",                                         # right (think tags)
        fmt("April 48, May is half: 12. 48 + 12 = 60.", "60"),                                     # wrong
    ],
    "weng": [
        fmt("12 dollars per 60 minutes is 0.2 per minute. 0.2 * 50 = 10.", "10"),                  # right
        fmt("She worked 50 minutes, which is 5/6 of an hour. 12 * 5/6 = 10.", "10"),              # right
        fmt("12 * 50 = 600.", "600"),                                                             # wrong
        fmt("0.2 * 50 = 10 dollars.", "$10"),                                                     # wrong (exact)
        "<reasoning>\n12 / 60 * 50 = 10\n</reasoning>\n<answer>\n10.0\n</answer>",                 # wrong (exact)
        "",                                                                                       # wrong (empty)
        fmt("An hour is 60 minutes. 50 minutes is less than an hour so she earned 12 - 50 = -38.", "-38"),
        "<reasoning>\nfirst try: 12 * 50 = 600\n</reasoning>\n<reasoning>\n12 / 60 = 0.2, 0.2 * 50 = 10\n"
        "</reasoning>\n<answer>\n10\n</answer>",                                                  # right (two blocks)
    ],
    "betty": [
        fmt("Betty has 50. Parents give 15, grandparents 30. 100 - 50 - 15 - 30 = 5.", "5"),       # right
        fmt("She has half of 100 = 50. 50 + 15 + 30 = 95, so she needs 5 more.", "5"),             # right
        fmt("100 - 50 - 15 = 35.", "35"),                                                          # wrong
        fmt("She needs 100 - 15 - 15 = 70.", "70"),                                                # wrong
        "<reasoning>\nBetty needs 100. She has 50. 15 + 30 = 45. 50 - 45 = 5",                    # wrong (no answer)
        "5",                                                                                      # right (bare)
    ],
    "james": [
        fmt("3 pages * 2 friends = 6 pages, twice a week = 12 pages, 52 weeks = 624.", "624"),     # right
        fmt("3 * 2 * 2 = 12 pages per week; 12 * 52 = 624 pages per year.", "624"),                # right
        fmt("3 * 2 = 6 pages a week, 6 * 52 = 312.", "312"),                                       # wrong
        fmt("3 * 2 * 2 * 365 = 4380.", "4380"),                                                    # wrong
        "He writes 624 pages.",                                                                    # wrong (no tags)
        fmt("12 pages a week times 52 weeks is 624.", "624"),                                      # right
    ],
}


def make_call(order: list[str], g: int, seed: int) -> dict:
    """One reward call: ``order`` questions, ``g`` completions each (prompt-major, as TRL)."""
    rng = np.random.default_rng(seed)
    out = {"completions": [], "question": [], "answer": []}
    for name in order:
        pool = COMPLETIONS[name]
        for j in rng.choice(len(pool), size=g, replace=len(pool) < g):
            out["completions"].append(pool[j])
            out["question"].append(Q[name][0])
            out["answer"].append(Q[name][1])
    return out


CALLS = [make_call(["clips", "weng", "betty", "james"], 4, 0),
         make_call(["betty", "clips", "james", "weng"], 4, 1),
         make_call(["weng", "james", "clips", "betty"], 4, 2)]
