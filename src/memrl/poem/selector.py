"""A fitted POEM optimiser as a plain example selector: ``selector(query) -> ordered demonstrations``."""

from __future__ import annotations

from memrl.poem.optimizer import PoemOptimizer
from memrl.tasks.fewshot import Example


class PoemExampleSelector:
    """Drop-in example selector: ``selector(query) -> ordered demonstrations``.

    Wraps a fitted :class:`PoemOptimizer` so any prompt pipeline that asks "which examples, in
    which order, for this input?" can use POEM without knowing about memories or codes.

    Example:
        >>> selector = PoemExampleSelector(opt)                                   # doctest: +SKIP
        >>> demos = selector("a gorgeous, witty film")                            # doctest: +SKIP
        >>> prompt = "".join(f"Review: {d.text}\\nSentiment: {verbalizer[d.label]}\\n\\n" for d in demos)  # doctest: +SKIP
    """

    def __init__(self, optimizer: PoemOptimizer) -> None:
        optimizer.check_fitted()
        self.optimizer = optimizer

    def __call__(self, query: Example | str) -> list[Example]:
        return self.optimizer.select(query).examples

    def prompt(self, query: Example | str) -> str:
        """The full prompt (ordered demonstrations + the query rendered by the task template)."""
        ex = Example(text=query, label=0) if isinstance(query, str) else query
        task = self.optimizer.task
        return task.prefix(self(query)) + task.suffix(ex)
