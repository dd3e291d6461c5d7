"""Heuristic orderings POEM is compared with (same LM, same demonstrations).

* random order — the exact expected accuracy of a uniformly random candidate order per query;
* KATE (Liu et al. 2022) — by similarity to the query, most similar last (and the reverse);
* GlobalE / LocalE (Lu et al. 2022, "Fantastically Ordered Prompts") — build a probe set by
  sampling from the LM under every candidate order, then pick the order whose predictions on it
  have the highest entropy of the predicted-label histogram (GlobalE) or the highest mean
  per-probe entropy (LocalE); multiple-choice tasks use unlabelled training inputs as probes;
* best fixed order — the order with the highest training accuracy (from POEM's fit trials);
* zero-shot — no demonstrations.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memrl.poem.orders import Order, decode_order, kate_code, similarity_ranks
from memrl.poem.rewards import label_probs
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)


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


def probes_per_order(n_orders: int, min_probes: int) -> int:
    """Samples to draw from each candidate order so that the probe set has at least ``min_probes``
    texts (before removing duplicates). Lu et al. draw the probe set from *every* candidate order;
    with few orders one sample each leaves so few probes that many orders tie on GlobalE.

    >>> probes_per_order(24, 48), probes_per_order(24, 10), probes_per_order(120, 48)
    (2, 1, 1)
    """
    if n_orders < 1 or min_probes < 1:
        raise ValueError(f"probes_per_order needs n_orders >= 1 and min_probes >= 1, got {n_orders}, {min_probes}")
    return max(1, -(-min_probes // n_orders))


@dataclass
class ProbeSet:
    """GlobalE/LocalE's probe set: the distinct probe ``texts`` (as unlabelled examples), how many
    samples were drawn to get them, and in how many rounds (the first, then the top-ups)."""

    probes: list[Example]
    drawn: int
    rounds: int

    def __len__(self) -> int:
        return len(self.probes)


def sample_probes(
    task: FewShotTask,
    scorer: Any,
    demos: Sequence[Example],
    perms: Sequence[Order],
    *,
    samples_per_order: int = 1,
    min_distinct: int = 0,
    max_top_ups: int = 16,
    max_new_tokens: int = 32,
    seed: int = 0,
) -> ProbeSet:
    """Lu et al.'s probe set: for each candidate order, let the LM continue the prompt with a new input.

    The prompt is the ordered demonstrations followed by the template's text before ``{text}``
    (e.g. ``"Review: "``); the probe is the first non-blank line of the sample (the 135M LM often
    starts with a line break), cut where the template continues (``"\\nSentiment:"``). Each order
    is sampled ``samples_per_order`` times (temperature 1); empty texts and texts already in the set
    are dropped. While fewer than ``min_distinct`` distinct texts are left, one more sample per
    order is drawn (a new seed each time), at most ``max_top_ups`` times: a small LM repeats itself,
    and the duplicates would otherwise leave fewer probes than asked for (a warning says so if the
    top-ups run out first). Needs a backend that generates (:class:`memrl.lm.HFScorer`).
    """
    from memrl.lm.loading import generate

    if not hasattr(scorer, "model"):
        raise ValueError("GlobalE/LocalE probes need a generating backend (HFScorer); got "
                         f"{type(scorer).__name__}")
    lead = task.template.input.split("{text}")[0]
    regex = _template_regex(task.template.input)
    probes: list[Example] = []
    seen: set[tuple[str, str | None]] = set()
    prompts = [task.prefix([demos[p] for p in perm]) + lead for perm in perms]
    drawn = rounds = 0
    for round_ in range(max_top_ups + 1):
        if round_ and len(probes) >= min_distinct:
            break
        repeats = samples_per_order if round_ == 0 else 1
        outs = generate(scorer.model, scorer.tokenizer, [q for q in prompts for _ in range(repeats)],
                        max_new_tokens=max_new_tokens, temperature=1.0, seed=seed + round_, batch_size=16)
        drawn += len(outs)
        rounds += 1
        for out in outs:
            probe = _read_probe(task, regex, lead, out["text"])
            if probe is not None and (probe.text, probe.text_b) not in seen:
                seen.add((probe.text, probe.text_b))
                probes.append(probe)
    if not probes:
        raise RuntimeError("the LM produced no usable probe text for GlobalE/LocalE")
    if len(probes) < min_distinct:
        logger.warning("GlobalE/LocalE: %d distinct probes after %d samples in %d rounds, fewer than the %d asked "
                       "for", len(probes), drawn, rounds, min_distinct)
    return ProbeSet(probes, drawn, rounds)


def _read_probe(task: FewShotTask, regex: re.Pattern[str], lead: str, generated: str) -> Example | None:
    """The input the LM wrote after ``lead`` (the template's text before ``{text}``): its first
    non-blank line, or None if there is none."""
    raw = lead + generated
    m = regex.match(raw)
    text = m.group("text") if m else raw[len(lead):]
    text = text.lstrip().split("\n")[0].strip()
    if not text:
        return None
    text_b = None
    if "{text_b}" in task.template.input:
        text_b = (m.group("text_b").strip() if m and m.groupdict().get("text_b") else text)
    return Example(text=text, label=0, text_b=text_b)


def unlabelled_probes(inputs: Sequence[Example], count: int, seed: int = 0) -> list[Example]:
    """GlobalE/LocalE's probe set for multiple-choice tasks: a seeded sample of ``count`` training
    inputs with their labels dropped. (Lu et al. sample probes from the LM; a sampled question
    would also need sampled answer choices, so real unlabelled inputs stand in. Their labels are
    replaced by 0 and never read: the entropies use only the predicted choice distribution.)"""
    if not inputs:
        raise ValueError("unlabelled_probes: no inputs to draw the probe set from")
    idx = np.random.default_rng(seed).permutation(len(inputs))[:count]
    return [dataclasses.replace(inputs[int(i)], label=0) for i in sorted(idx)]


def pick_entropy_orders(perms: Sequence[Order], stats: dict[Order, tuple[float, float]],
                        tol: float = 1e-12) -> tuple[Order, Order, dict[str, int]]:
    """The GlobalE and LocalE orders from per-order ``(GlobalE, LocalE)`` scores (pure).

    GlobalE ties (common: the histogram takes few values on a small probe set) go to the higher
    LocalE, LocalE ties to the higher GlobalE, remaining ties to the earlier order in ``perms``.
    Also returns how many orders shared the top GlobalE / LocalE value before the tie-break.

    >>> pick_entropy_orders([(0, 1), (1, 0)], {(0, 1): (0.69, 0.5), (1, 0): (0.69, 0.6)})
    ((1, 0), (1, 0), {'globale_ties': 2, 'locale_ties': 1})
    """
    def key(primary: int):
        return lambda p: (round(stats[p][primary] / tol), stats[p][1 - primary])

    g = max(perms, key=key(0))  # max() keeps the first of equal keys: the earlier order
    loc = max(perms, key=key(1))
    ties = {"globale_ties": sum(abs(stats[p][0] - stats[g][0]) <= tol for p in perms),
            "locale_ties": sum(abs(stats[p][1] - stats[loc][1]) <= tol for p in perms)}
    return g, loc, ties


def entropy_orders(
    task: FewShotTask,
    scorer: Any,
    demos: Sequence[Example],
    perms: Sequence[Order],
    probes: Sequence[Example],
) -> tuple[Order, Order, dict[Order, tuple[float, float]], dict[str, int]]:
    """Score every order on the probe set; return (GlobalE order, LocalE order, all scores, tie
    counts) as :func:`pick_entropy_orders` chooses. Costs ``len(perms) * len(probes)`` LM calls."""
    stats: dict[Order, tuple[float, float]] = {}
    suffixes = [task.suffix(p) for p in probes]
    for perm in perms:
        res = scorer.score(task.prefix([demos[p] for p in perm]), suffixes, task.continuations(probes))
        stats[perm] = globale_locale_scores(label_probs(res.normalised(task.length_normalise)))
    g, loc, ties = pick_entropy_orders(perms, stats)
    return g, loc, stats, ties
