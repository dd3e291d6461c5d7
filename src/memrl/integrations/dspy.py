"""POEM as a DSPy teleprompter: demonstrations chosen and ordered per query, at call time.

:class:`PoemFewShot` has the usual teleprompter shape: hyperparameters in the constructor,
``compile(student, *, trainset)`` returns a new program. Compiling fits a
:class:`memrl.poem.PoemOptimizer` on the trainset (one LM call per (training input, order),
through a memrl scorer: POEM needs label log-probabilities, which DSPy's chat LMs do not give).
The compiled :class:`PoemProgram` then, on every call, embeds the query, reads POEM's memory
(no LM call) and runs a copy of the student whose predictors' ``demos`` are that query's
demonstrations in POEM's order. DSPy's own ``KNNFewShot`` also picks demonstrations per query,
but in neighbour order; here the order is what POEM learned.

Mapping (``dspy.Example`` → POEM): ``input_field`` is the text POEM embeds and scores,
``label_field`` the answer; ``labels`` lists the label values (default: the sorted distinct
values of the trainset), ``verbalizer`` the word POEM scores per label (default: the label values
themselves) in the plain-text ``template`` (default ``"<input_field>: {text}\\n<label_field>:"``).
The demonstrations handed to DSPy are the trainset's own ``dspy.Example`` objects, all fields kept.

Example:
    >>> import dspy                                                                  # doctest: +SKIP
    >>> from memrl.lm import OpenAICompletionsScorer                                # doctest: +SKIP
    >>> tp = PoemFewShot(OpenAICompletionsScorer(url, "smol"), input_field="review",  # doctest: +SKIP
    ...                  label_field="sentiment", n_examples=4)
    >>> program = tp.compile(dspy.Predict("review -> sentiment"), trainset=trainset)  # doctest: +SKIP
    >>> program(review="a gorgeous, witty, seductive movie").sentiment               # doctest: +SKIP

Needs ``dspy`` (``pip install memrl[dspy]``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import dspy
    from dspy.teleprompt import Teleprompter
except ImportError as exc:
    raise ImportError(
        "memrl.integrations.dspy needs DSPy, which is not installed: pip install 'memrl[dspy]' (or pip install dspy)"
    ) from exc

from memrl.poem.config import PoemConfig
from memrl.poem.optimizer import FitReport, PoemOptimizer
from memrl.tasks.fewshot import Example, FewShotTask, PromptTemplate

__all__ = ["PoemFewShot", "PoemProgram"]


class PoemProgram(dspy.Module):
    """A compiled program: ``program`` run with POEM's per-query demonstrations.

    Attributes:
        program: the student's copy (``student.reset_copy()``); its predictors' own ``demos`` stay
            empty: each call runs a fresh copy of it with the call's demonstrations, so concurrent
            calls (``dspy.Evaluate(num_threads=...)``) never see each other's demonstrations.
        optimizer: the fitted :class:`PoemOptimizer` (shared, read-only, by copies of this program).
        predictor_names: the predictors (names in ``program.named_predictors()``) that get the demos.
        input_field: the call's keyword argument POEM reads the query from.
        fit_report: cost and outcome of the fit (``None`` after :meth:`PoemFewShot.restore`).
    """

    def __init__(self, program: dspy.Module, optimizer: PoemOptimizer, predictor_names: Sequence[str],
                 input_field: str, demo_of: dict[Example, Any], fit_report: FitReport | None = None) -> None:
        super().__init__()
        self.program = program
        self.optimizer = optimizer
        self.predictor_names = list(predictor_names)
        self.input_field = input_field
        self._demo_of = demo_of
        self.fit_report = fit_report

    def __deepcopy__(self, memo: dict) -> PoemProgram:
        # DSPy copies programs (reset_copy, optimisers); copy the student, share the fitted
        # optimiser (its LM and encoder are large and only read at call time).
        new = copy.copy(self)
        new.program = copy.deepcopy(self.program, memo)
        new.predictor_names = list(self.predictor_names)
        new.callbacks = list(self.callbacks)
        new.history = []
        return new

    def select(self, **inputs: Any) -> list[Any]:
        """The demonstrations (trainset ``dspy.Example`` objects) a call with ``inputs`` uses, in
        prompt order. No LM call."""
        if self.input_field not in inputs:
            raise TypeError(f"POEM reads the query from the keyword argument {self.input_field!r} "
                            f"(input_field), which this call lacks (got {sorted(inputs)})")
        examples = self.optimizer.select(str(inputs[self.input_field])).examples
        return [self._demo_of[ex] for ex in examples]

    def forward(self, **inputs: Any) -> Any:
        demos = self.select(**inputs)
        run = self.program.deepcopy()
        own = dict(self.program.named_predictors())
        wanted = set(self.predictor_names)
        for name, predictor in run.named_predictors():
            # the copy calls the program's own LM objects (set with set_lm): their history and
            # connection pools, not copies of them
            predictor.lm = own[name].lm
            if name in wanted:
                predictor.demos = list(demos)
        return run(**inputs)


class PoemFewShot(Teleprompter):
    """A DSPy teleprompter that fits POEM on the trainset and orders demonstrations per query.

    Args:
        scorer: the memrl LM backend POEM fits with — an :class:`memrl.lm.HFScorer`, an
            :class:`memrl.lm.OpenAICompletionsScorer` (e.g. the same vLLM server DSPy talks to), or
            a model name for :meth:`memrl.lm.HFScorer.from_name` (``"smollm2-135m"``).
        encoder: a :class:`memrl.encoders.Encoder`, an encoder name, or ``None`` (all-MiniLM-L6-v2).
        config: a :class:`memrl.poem.PoemConfig`; keyword ``poem_options`` (its field names:
            ``n_examples``, ``k``, ``budget``, ``examples``, ``encoding``, ...) override its fields.
        input_field: the ``dspy.Example`` field (and call keyword) holding the query text.
        label_field: the field holding the answer; it must be an output field of the predictors
            that get demonstrations.
        labels: the label values, in verbalizer order (default: sorted distinct trainset values,
            compared as strings).
        verbalizer: the word POEM scores per label (default: the label values as strings).
        template: POEM's scoring prompt (default ``"<input_field>: {text}\\n<label_field>:"``).
            POEM learns orders under this plain-text prompt; DSPy's adapter formats the same
            demonstrations its own way (chat turns), so the learned order is transferred, not
            re-measured, in DSPy's format.
        predictors: names (as in ``student.named_predictors()``) of the predictors that get
            demonstrations; default: every predictor whose signature has ``input_field`` as an
            input and ``label_field`` as an output.
        name: task name recorded in the POEM memory's identity.
        progress: show the fit's progress bar.

    Example:
        >>> tp = PoemFewShot("smollm2-135m", input_field="review", label_field="sentiment", n_examples=4)  # doctest: +SKIP
        >>> compiled = tp.compile(dspy.Predict("review -> sentiment"), trainset=trainset)  # doctest: +SKIP
    """

    def __init__(
        self,
        scorer: Any,
        encoder: Any = None,
        config: PoemConfig | None = None,
        *,
        input_field: str,
        label_field: str,
        labels: Sequence[Any] | None = None,
        verbalizer: Sequence[str] | None = None,
        template: PromptTemplate | None = None,
        predictors: Sequence[str] | None = None,
        name: str = "dspy",
        progress: bool = False,
        **poem_options: Any,
    ) -> None:
        super().__init__()
        if input_field == label_field:
            raise ValueError(f"input_field and label_field must differ; both are {input_field!r}")
        base = config or PoemConfig()
        unknown = sorted(set(poem_options) - {f.name for f in dataclasses.fields(PoemConfig)})
        if unknown:
            raise TypeError(f"unknown PoemFewShot option(s) {unknown}; PoemConfig fields are "
                            f"{[f.name for f in dataclasses.fields(PoemConfig)]}")
        self.config = dataclasses.replace(base, **poem_options)  # validated by PoemConfig
        if isinstance(scorer, str):
            from memrl.lm import HFScorer

            scorer = HFScorer.from_name(scorer)
        if encoder is None or isinstance(encoder, str):
            from memrl.encoders import Encoder

            encoder = Encoder() if encoder is None else Encoder(encoder)
        self.scorer = scorer
        self.encoder = encoder
        self.input_field = input_field
        self.label_field = label_field
        self.labels = list(labels) if labels is not None else None
        self.verbalizer = list(verbalizer) if verbalizer is not None else None
        self.template = template
        self.predictors = list(predictors) if predictors is not None else None
        self.name = name
        self.progress = progress

    # ------------------------------------------------------------------ mapping
    def to_task(self, trainset: Sequence[Any]) -> tuple[FewShotTask, dict[Example, Any]]:
        """The POEM task of ``trainset`` and the map from its examples back to the ``dspy.Example``
        objects (the first one, for duplicates). Raises ``ValueError`` naming the example and field."""
        trainset = list(trainset)
        if not trainset:
            raise ValueError("PoemFewShot.compile needs a non-empty trainset")
        rows = []
        for i, ex in enumerate(trainset):
            for name in (self.input_field, self.label_field):
                if ex.get(name) is None:
                    raise ValueError(f"trainset[{i}] has no {name!r} field (fields: {sorted(ex.keys())}); "
                                     "set input_field/label_field to the fields holding the text and the answer")
            text = ex.get(self.input_field)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"trainset[{i}].{self.input_field} must be a non-empty string, got {text!r:.60}")
            rows.append((text.strip(), str(ex.get(self.label_field)).strip(), ex))
        labels = [str(x).strip() for x in self.labels] if self.labels is not None else sorted({r[1] for r in rows})
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        verbalizer = [str(v) for v in self.verbalizer] if self.verbalizer is not None else labels
        if len(verbalizer) != len(labels):
            raise ValueError(f"verbalizer has {len(verbalizer)} words for {len(labels)} labels {labels}")
        train: list[Example] = []
        demo_of: dict[Example, Any] = {}
        for i, (text, label, ex) in enumerate(rows):
            if label not in labels:
                raise ValueError(f"trainset[{i}].{self.label_field} = {label!r} is not one of the labels {labels}")
            item = Example(text=text, label=labels.index(label))
            train.append(item)
            demo_of.setdefault(item, ex)
        template = self.template or PromptTemplate(input=f"{self.input_field}: {{text}}\n{self.label_field}:")
        task = FewShotTask(name=self.name, seed=None, source="dspy trainset", train=train, dev=[], test=[],
                           label_names=tuple(labels), template=template, verbalizer=tuple(verbalizer))
        return task, demo_of

    def _targets(self, program: dspy.Module) -> list[str]:
        named = program.named_predictors()
        if self.predictors is not None:
            missing = sorted(set(self.predictors) - {n for n, _ in named})
            if missing:
                raise ValueError(f"predictors {missing} not found in the student; it has {[n for n, _ in named]}")
            return list(self.predictors)
        targets = [n for n, p in named
                   if self.input_field in p.signature.input_fields and self.label_field in p.signature.output_fields]
        if not targets:
            found = {n: str(p.signature.signature) for n, p in named}
            raise ValueError(f"no predictor of the student has {self.input_field!r} as an input and "
                             f"{self.label_field!r} as an output (predictors: {found}); pass predictors= "
                             "or fix input_field/label_field")
        return targets

    # ------------------------------------------------------------------ Teleprompter
    def compile(self, student: dspy.Module, *, trainset: Sequence[Any], teacher: Any = None,
                valset: Any = None, **kwargs: Any) -> PoemProgram:
        """Fit POEM on ``trainset`` and return a new :class:`PoemProgram` (``student`` is not touched).

        ``teacher``/``valset`` are not used by POEM and must be ``None``; other keyword arguments
        are refused.
        """
        if teacher is not None or valset is not None or kwargs:
            given = [k for k, v in (("teacher", teacher), ("valset", valset)) if v is not None] + sorted(kwargs)
            raise TypeError(f"PoemFewShot.compile takes only student and trainset; got {given}")
        program = student.reset_copy()
        targets = self._targets(program)
        task, demo_of = self.to_task(trainset)
        optimizer = PoemOptimizer(task, self.scorer, self.encoder, self.config)
        report = optimizer.fit(progress=self.progress)
        report.record = None  # the trials are not needed at call time
        return PoemProgram(program, optimizer, targets, self.input_field, demo_of, report)

    def restore(self, student: dspy.Module, path: str | Path, *, trainset: Sequence[Any]) -> PoemProgram:
        """A compiled program from a POEM optimiser saved with ``program.optimizer.save(path)``,
        without fitting again. ``trainset`` must be the one it was compiled on (checked through the
        task identity: :class:`memrl.poem.PoemMismatchError` otherwise)."""
        program = student.reset_copy()
        targets = self._targets(program)
        task, demo_of = self.to_task(trainset)
        optimizer = PoemOptimizer.load(path, task, self.scorer, self.encoder)
        return PoemProgram(program, optimizer, targets, self.input_field, demo_of)
