"""The few-shot task model: examples, prompt templates, and tasks with their splits.

Shared by the classification tasks (:mod:`memrl.tasks.classification`), the multiple-choice sets
(:mod:`memrl.tasks.multiple_choice`) and POEM; it imports neither, so there is no import cycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace


def text_hash(text: str) -> str:
    """16 hex digits of the SHA-1 of ``text``: tells saved records apart or together without
    keeping the dataset's text."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    """One labelled input.

    Attributes:
        text: the input (premise for pair tasks, the question for multiple choice).
        label: gold index into the task's verbalizer, or into ``choices``.
        text_b: second text of a pair task (hypothesis, second sentence), else ``None``.
        choices: per-example answer choices (multiple choice), else ``None``.
    """

    text: str
    label: int
    text_b: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def key_text(self) -> str:
        """The text embedded for similarity (both parts of a pair)."""
        return self.text if self.text_b is None else f"{self.text} {self.text_b}"

    @property
    def item_id(self) -> str:
        """The whole item (texts, choices, gold) as a :func:`text_hash`: the same test item has the
        same id under every data seed, so paired comparisons can pool seeds by item."""
        return text_hash(json.dumps([self.text, self.text_b, self.choices, self.label]))


@dataclass(frozen=True)
class PromptTemplate:
    """How examples become prompt text.

    Attributes:
        input: format string with ``{text}`` (and ``{text_b}``); it ends right before the answer.
        instruction: text put once before the demonstrations (also used by zero-shot).
        answer_prefix: joins the input and the answer (a space: answers are scored as " word").
        demo_separator: follows every demonstration.
    """

    input: str = "Input: {text}\nLabel:"
    instruction: str = ""
    answer_prefix: str = " "
    demo_separator: str = "\n\n"

    def render_query(self, example: Example) -> str:
        return self.input.format(text=example.text, text_b=example.text_b or "")

    def render_demo(self, example: Example, answer: str) -> str:
        return self.render_query(example) + self.answer_prefix + answer + self.demo_separator


@dataclass
class FewShotTask:
    """A task with its splits, template and verbalizer.

    Attributes:
        name: registry name (``sst2``) or a user label for local files.
        seed: data seed of the 16-shot split (``None`` for local files).
        source: where the data came from (layout and folder), for reports.
        train, dev, test: the splits.
        label_names: the dataset's label names, index = ``Example.label``.
        template: the :class:`PromptTemplate`.
        verbalizer: one answer word per label; ``None`` for multiple choice (answers are the
            example's ``choices``).
        length_normalise: score answers by mean token log-probability (multiple choice) rather
            than the sum (single-word verbalizers).
    """

    name: str
    seed: int | None
    source: str
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    label_names: tuple[str, ...]
    template: PromptTemplate
    verbalizer: tuple[str, ...] | None
    length_normalise: bool = False

    # ------------------------------------------------------------------ prompts
    def answer(self, example: Example) -> str:
        """The gold answer text of ``example`` (verbalizer word or gold choice)."""
        if example.choices is not None:
            return example.choices[example.label]
        assert self.verbalizer is not None
        return self.verbalizer[example.label]

    def prefix(self, demos: Sequence[Example]) -> str:
        """Instruction followed by the demonstrations in the given order."""
        t = self.template
        return t.instruction + "".join(t.render_demo(d, self.answer(d)) for d in demos)

    def suffix(self, example: Example) -> str:
        return self.template.render_query(example)

    def continuations(self, examples: Sequence[Example]) -> list[str] | list[list[str]]:
        """Shared verbalizer continuations, or one choice list per example (multiple choice)."""
        pre = self.template.answer_prefix
        if self.verbalizer is not None:
            return [pre + v for v in self.verbalizer]
        return [[pre + c for c in ex.choices or ()] for ex in examples]

    @property
    def num_choices(self) -> int:
        if self.verbalizer is not None:
            return len(self.verbalizer)
        return len(self.test[0].choices or ()) if self.test else 0

    def identity(self) -> str:
        """Stable name of what a POEM memory is specific to: task, data seed, template,
        verbalizer and the training data itself. Two tasks with different prompts, or two local
        files under one task name, get different identities."""
        spec = json.dumps(
            {"template": asdict(self.template), "verbalizer": self.verbalizer,
             "length_normalise": self.length_normalise},
            sort_keys=True,
        )
        digest = hashlib.sha1(spec.encode()).hexdigest()[:10]
        data = json.dumps({"labels": list(self.label_names),
                           "train": [[ex.text, ex.text_b, ex.label, ex.choices] for ex in self.train]})
        data_digest = hashlib.sha1(data.encode()).hexdigest()[:10]
        seed = "" if self.seed is None else f"/seed{self.seed}"
        return f"{self.name}{seed}/prompt-{digest}/data-{data_digest}"

    def with_prompt(
        self, template: PromptTemplate | None = None, verbalizer: Sequence[str] | None = None
    ) -> FewShotTask:
        """A copy with another template and/or verbalizer (checked against the label count)."""
        if verbalizer is not None and len(verbalizer) != len(self.label_names):
            raise ValueError(
                f"task {self.name!r} has {len(self.label_names)} labels {self.label_names}; "
                f"got a verbalizer of {len(verbalizer)} words {list(verbalizer)}"
            )
        return replace(
            self,
            template=template or self.template,
            verbalizer=tuple(verbalizer) if verbalizer is not None else self.verbalizer,
        )
