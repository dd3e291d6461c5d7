"""POEM as a LangChain example selector: per-query demonstrations, in POEM's order.

:class:`PoemLangChainSelector` implements ``langchain_core.example_selectors.BaseExampleSelector``
on a fitted :class:`memrl.poem.PoemOptimizer`, so it plugs into ``FewShotPromptTemplate``
(``example_selector=...``) like LangChain's own ``SemanticSimilarityExampleSelector``, with the
difference that the examples come back **ordered** for the query by POEM's episodic memory.
Selecting makes no LM call (one embedding of the query, a memory read, a decode).

Example:
    >>> from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate  # doctest: +SKIP
    >>> selector = PoemLangChainSelector(opt)          # opt: a fitted PoemOptimizer  # doctest: +SKIP
    >>> prompt = FewShotPromptTemplate(                                            # doctest: +SKIP
    ...     example_selector=selector,
    ...     example_prompt=PromptTemplate.from_template("Review: {input}\\nSentiment: {output}"),
    ...     suffix="Review: {input}\\nSentiment:", input_variables=["input"])
    >>> prompt.format(input="a gorgeous, witty, seductive movie")                  # doctest: +SKIP

Needs ``langchain-core`` (``pip install memrl[langchain]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.example_selectors import BaseExampleSelector
except ImportError as exc:
    raise ImportError(
        "memrl.integrations.langchain needs langchain-core, which is not installed: "
        "pip install 'memrl[langchain]' (or pip install langchain-core)"
    ) from exc

from memrl.poem.optimizer import PoemOptimizer
from memrl.tasks.fewshot import Example

__all__ = ["PoemLangChainSelector"]


class PoemLangChainSelector(BaseExampleSelector):
    """A LangChain ``BaseExampleSelector`` backed by a fitted :class:`PoemOptimizer`.

    Args:
        optimizer: a fitted (or loaded) optimiser; its task's template and verbalizer are the ones
            POEM scored with, so keep the LangChain ``example_prompt`` close to them.
        input_key: the prompt variable that holds the query text, and the key of each returned
            example's text.
        output_key: key of each returned example's answer.
        text_b_key: for pair tasks, the variable/key of the second text (``Example.text_b``).
        labels: the answer string per label index put under ``output_key`` (and read back by
            :meth:`add_example`); default: the task's verbalizer words (what POEM scored), or the
            gold choice text for multiple-choice tasks.

    :meth:`select_examples` returns dicts ``{input_key: text, output_key: answer}`` (plus
    ``text_b_key``), in the order POEM chose for that query.

    :meth:`add_example` depends on the demonstrations the optimiser reads (``optimizer.source``):
    kNN ones (``examples="knn"``, or ``"choose"`` when the selection chose them) take the example
    into the candidate pool at once (POEM's rank codes name no example, so no refit is needed; see
    :meth:`PoemOptimizer.add_examples`; the addition is not saved by ``PoemOptimizer.save``); fixed
    ones raise ``ValueError``: the memory's rewards were earned by orders of the fixed set, so a
    new demonstration needs a refit.
    """

    def __init__(
        self,
        optimizer: PoemOptimizer,
        *,
        input_key: str = "input",
        output_key: str = "output",
        text_b_key: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        optimizer.check_fitted()
        task = optimizer.task
        if labels is not None and len(labels) != len(task.label_names):
            raise ValueError(f"labels has {len(labels)} strings for the {len(task.label_names)} labels "
                             f"{list(task.label_names)} of task {task.name!r}")
        if len({input_key, output_key, text_b_key} - {None}) < (3 if text_b_key else 2):
            raise ValueError(f"input_key, output_key and text_b_key must differ; got {input_key!r}, "
                             f"{output_key!r}, {text_b_key!r}")
        self.optimizer = optimizer
        self.input_key = input_key
        self.output_key = output_key
        self.text_b_key = text_b_key
        self.labels = tuple(labels) if labels is not None else None

    # ------------------------------------------------------------------ mapping
    def _answer(self, ex: Example) -> str:
        if self.labels is not None and ex.choices is None:
            return self.labels[ex.label]
        return self.optimizer.task.answer(ex)

    def to_dict(self, ex: Example) -> dict[str, Any]:
        """One demonstration as the dict LangChain formats with the ``example_prompt``."""
        out: dict[str, Any] = {self.input_key: ex.text, self.output_key: self._answer(ex)}
        if self.text_b_key is not None:
            out[self.text_b_key] = ex.text_b or ""
        return out

    def _query(self, variables: dict[str, Any]) -> Example:
        if self.input_key not in variables:
            raise KeyError(f"PoemLangChainSelector reads the query from the prompt variable {self.input_key!r}, "
                           f"which is not among {sorted(variables)}; pass input_key= to name it")
        text_b = None
        if self.text_b_key is not None:
            if self.text_b_key not in variables:
                raise KeyError(f"prompt variable {self.text_b_key!r} (text_b_key) missing from {sorted(variables)}")
            text_b = str(variables[self.text_b_key])
        return Example(text=str(variables[self.input_key]), label=0, text_b=text_b)

    # ------------------------------------------------------------------ BaseExampleSelector
    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The query's demonstrations, in POEM's order, as dicts (no LM call)."""
        selection = self.optimizer.select(self._query(input_variables))
        return [self.to_dict(ex) for ex in selection.examples]

    def add_example(self, example: dict[str, Any]) -> None:
        """Add a demonstration (``{input_key: text, output_key: answer}``) to the candidate pool.

        Only when the optimiser reads kNN demonstrations, where it takes effect at once; with fixed
        ones it raises ``ValueError`` (a refit is needed, see the class docstring). The answer must be
        one of the label strings (``labels`` or the task's verbalizer).
        """
        task = self.optimizer.task
        if task.verbalizer is None:
            raise ValueError("add_example supports classification tasks only (a multiple-choice example "
                             "needs its own choices)")
        for key in (self.input_key, self.output_key):
            if key not in example:
                raise KeyError(f"example {example!r:.80} has no {key!r} key")
        words = list(self.labels or task.verbalizer)
        answer = str(example[self.output_key]).strip()
        if answer not in words:
            raise ValueError(f"answer {answer!r} is not one of the task's label strings {words}")
        text_b = str(example[self.text_b_key]) if self.text_b_key is not None else None
        ex = Example(text=str(example[self.input_key]), label=words.index(answer), text_b=text_b)
        self.optimizer.add_examples([ex])
