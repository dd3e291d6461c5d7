"""GlobalE/LocalE probe parsing: a rendered query is read back into its text fields."""

import pytest

from memrl.poem.baselines import _template_regex


@pytest.mark.parametrize("template, rendered, expected", [
    ("Review: {text}\nSentiment:", "Review: bad film\nSentiment: negative", {"text": "bad film"}),
    # a template ending in its placeholder: the text is everything after the lead, not one character
    ("Sentence: {text}", "Sentence: the movie was great", {"text": "the movie was great"}),
    ("{text} Question: {text_b}", "A cat sat Question: did it?", {"text": "A cat sat", "text_b": "did it?"}),
])
def test_template_regex_reads_fields_back(template, rendered, expected):
    assert _template_regex(template).match(rendered).groupdict() == expected
