"""GlobalE/LocalE: probe parsing (a rendered query is read back into its text fields), the probe
set size (sampled from the real LM, topped up past duplicates), multiple-choice probes and the
tie-break."""

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


def test_entropy_ties_break_on_the_other_entropy_then_the_earlier_order():
    from memrl.poem.baselines import pick_entropy_orders

    perms = [(0, 1, 2), (1, 0, 2), (2, 1, 0), (0, 2, 1)]
    stats = {(0, 1, 2): (0.6931, 0.40), (1, 0, 2): (0.6931, 0.55), (2, 1, 0): (0.3, 0.55), (0, 2, 1): (0.1, 0.2)}
    g, loc, ties = pick_entropy_orders(perms, stats)
    assert g == (1, 0, 2)  # GlobalE tie between the first two, LocalE 0.55 > 0.40
    assert loc == (1, 0, 2)  # LocalE tie between (1,0,2) and (2,1,0), GlobalE decides
    assert ties == {"globale_ties": 2, "locale_ties": 2}
    stats[(2, 1, 0)] = (0.3, 0.9)
    assert pick_entropy_orders(perms, stats)[1] == (2, 1, 0)
    flat = {p: (0.5, 0.5) for p in perms}  # all equal: the first order, every order tied
    assert pick_entropy_orders(perms, flat) == (perms[0], perms[0], {"globale_ties": 4, "locale_ties": 4})


def test_probe_count_covers_every_order_and_reaches_the_minimum():
    from memrl.poem.baselines import probes_per_order

    for n_orders, min_probes in [(24, 48), (24, 50), (6, 1), (120, 48), (1, 7)]:
        k = probes_per_order(n_orders, min_probes)
        assert n_orders * k >= min_probes and (k == 1 or n_orders * (k - 1) < min_probes)  # enough, and no more
    with pytest.raises(ValueError, match="min_probes"):
        probes_per_order(24, 0)


def test_multiple_choice_probes_are_fit_inputs_without_labels():
    from memrl.poem.baselines import unlabelled_probes
    from memrl.tasks.classification import load_task

    task = load_task("piqa", 13)
    probes = unlabelled_probes(task.train, 10, seed=3)
    assert len(probes) == 10 and all(p.label == 0 for p in probes)
    texts = {ex.text: ex for ex in task.train}
    assert all(p.text in texts and p.choices == texts[p.text].choices for p in probes)
    assert [p.text for p in probes] == [p.text for p in unlabelled_probes(task.train, 10, seed=3)]
    assert len(unlabelled_probes(task.train, 10_000)) == len(task.train)


def test_sampled_probes_skip_a_blank_first_line_and_are_topped_up_to_the_minimum(sst2, scorer):
    from memrl.poem.baselines import _read_probe, _template_regex, sample_probes

    # SmolLM2-135M often starts its sample with a line break: the probe is the first non-blank line
    regex = _template_regex(sst2.template.input)
    assert _read_probe(sst2, regex, "Review: ", "\n a fine film\nSentiment: great").text == "a fine film"
    assert _read_probe(sst2, regex, "Review: ", "\n \n") is None

    demos, perms = [sst2.train[0], sst2.train[-1]], [(0, 1), (1, 0)]
    plain = sample_probes(sst2, scorer, demos, perms, samples_per_order=1, seed=5)
    assert 1 <= len(plain) <= 2 and plain.drawn == 2 and plain.rounds == 1  # no top-up without a minimum
    topped = sample_probes(sst2, scorer, demos, perms, samples_per_order=1, min_distinct=5, seed=5)
    # the first round is the same draw; then one more sample per order while short of 5 distinct
    assert [p.text for p in topped.probes[:len(plain)]] == [p.text for p in plain.probes]
    assert 5 <= len(topped) <= 6 and len({p.text for p in topped.probes}) == len(topped)
    assert topped.drawn == 2 * topped.rounds and len(topped) <= topped.drawn
    assert all(p.text and p.label == 0 and "\n" not in p.text for p in topped.probes)
    capped = sample_probes(sst2, scorer, demos, perms, samples_per_order=1, min_distinct=100, max_top_ups=2, seed=5)
    assert len(capped) <= 6 and capped.rounds == 3  # the top-ups are bounded: 1 + 2 rounds of 2 samples
