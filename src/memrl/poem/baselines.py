"""Heuristic orderings POEM is compared with (same LM, same demonstrations).

* random order — a fresh uniform order per query, repeated over several draws;
* KATE (Liu et al. 2022) — by similarity to the query, most similar last (and the reverse);
* GlobalE / LocalE (Lu et al. 2022, "Fantastically Ordered Prompts") — build a probe set by
  sampling from the LM, then pick the order whose predictions on it have the highest entropy
  of the predicted-label histogram (GlobalE) or the highest mean per-probe entropy (LocalE);
* best fixed order — the order with the highest training accuracy (from POEM's fit trials);
* zero-shot — no demonstrations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from memrl.poem.orders import Order, decode_order, kate_code, similarity_ranks
from memrl.poem.rewards import label_probs
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)


def random_perms(n: int, m: int, rng: np.random.Generator) -> list[Order]:
    """One uniform random order of ``n`` demonstrations for each of ``m`` queries."""
    return [tuple(int(x) for x in rng.permutation(n)) for _ in range(m)]


def kate_perms(sims: np.ndarray, most_similar_last: bool = True) -> list[Order]:
    """KATE order per query from ``sims`` ``(m, n)`` (query-to-demonstration similarities)."""
    code = kate_code(sims.shape[1], most_similar_last)
    return [decode_order(code, similarity_ranks(row)) for row in sims]


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=axis)


def globale_locale_scores(probs: np.ndarray) -> tuple[float, float]:
    """GlobalE and LocalE of one order from its label distributions on the probe set.

    Args:
        probs: ``(P, C)`` label probabilities of the ``P`` probes under that order.

    Returns:
        ``(GlobalE, LocalE)``: entropy of the histogram of predicted labels, and the mean entropy
        of the per-probe distributions.

    >>> globale_locale_scores(np.array([[0.9, 0.1], [0.2, 0.8]]))[0] > 0.69
    True
    """
    C = probs.shape[1]
    hist = np.bincount(probs.argmax(axis=1), minlength=C) / probs.shape[0]
    return float(entropy(hist)), float(entropy(probs, axis=1).mean())


def _template_regex(template_input: str) -> re.Pattern[str]:
    """Regex that parses a rendered query back into ``text`` (and ``text_b``)."""
    parts = [p for p in re.split(r"(\{text\}|\{text_b\})", template_input) if p]
    pattern = ""
    for i, part in enumerate(parts):
        # a placeholder followed by literal text stops at it (lazy); one that ends the template
        # has nothing to stop at and takes the rest (lazy would take a single character)
        quant = ".+?" if i < len(parts) - 1 else ".+"
        if part == "{text}":
            pattern += rf"(?P<text>{quant})"
        elif part == "{text_b}":
            pattern += rf"(?P<text_b>{quant})"
        else:
            pattern += re.escape(part)
    return re.compile(pattern, re.S)


def sample_probes(
    task: FewShotTask,
    scorer: Any,
    demos: Sequence[Example],
    perms: Sequence[Order],
    *,
    max_new_tokens: int = 32,
    seed: int = 0,
) -> list[Example]:
    """Lu et al.'s probe set: for each order, let the LM continue the prompt with a new input.

    The prompt is the ordered demonstrations followed by the template's text before ``{text}``
    (e.g. ``"Review: "``); the sample is cut where the template continues (``"\\nSentiment:"``) or
    at a blank line. Needs a backend that generates (:class:`memrl.lm.HFScorer`).
    """
    from memrl.lm.loading import generate

    if not hasattr(scorer, "model"):
        raise ValueError("GlobalE/LocalE probes need a generating backend (HFScorer); got "
                         f"{type(scorer).__name__}")
    lead = task.template.input.split("{text}")[0]
    prompts = [task.prefix([demos[p] for p in perm]) + lead for perm in perms]
    outs = generate(scorer.model, scorer.tokenizer, prompts, max_new_tokens=max_new_tokens,
                    temperature=1.0, seed=seed, batch_size=len(prompts))
    regex = _template_regex(task.template.input)
    probes = []
    for out in outs:
        raw = lead + out["text"]
        m = regex.match(raw)
        text = (m.group("text") if m else raw[len(lead):]).split("\n\n")[0].split("\n")[0].strip()
        text_b = None
        if "{text_b}" in task.template.input:
            text_b = (m.group("text_b").strip() if m and m.groupdict().get("text_b") else text)
        if text:
            probes.append(Example(text=text, label=0, text_b=text_b))
    if not probes:
        raise RuntimeError("the LM produced no usable probe text for GlobalE/LocalE")
    return probes


def entropy_orders(
    task: FewShotTask,
    scorer: Any,
    demos: Sequence[Example],
    perms: Sequence[Order],
    probes: Sequence[Example],
) -> tuple[Order, Order, dict[Order, tuple[float, float]]]:
    """Score every order on the probe set; return (GlobalE order, LocalE order, all scores).

    Costs ``len(perms) * len(probes)`` LM calls. Ties go to the earlier order in ``perms``.
    """
    stats: dict[Order, tuple[float, float]] = {}
    suffixes = [task.suffix(p) for p in probes]
    for perm in perms:
        res = scorer.score(task.prefix([demos[p] for p in perm]), suffixes, task.continuations(probes))
        stats[perm] = globale_locale_scores(label_probs(res.normalised(task.length_normalise)))
    g = max(perms, key=lambda p: stats[p][0])
    loc = max(perms, key=lambda p: stats[p][1])
    return g, loc, stats
