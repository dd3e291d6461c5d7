"""Outcome-based exploration rewards (Song, Kempe & Munos 2025): hand-computed values, counting
semantics, persistence, pickling, TRL calling conventions and two-process synchronisation."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from helpers.net import free_port
from memrl.rewards.exploration import (
    NO_ANSWER,
    ExplorationStateError,
    OutcomeBatchReward,
    OutcomeExplorationConfig,
    OutcomeUCBReward,
    batch_repeat_penalty,
    ucb_bonus,
    ucb_values,
)

S2, S3 = math.sqrt(2), math.sqrt(3)

# Step 1: q1 answers 5, 5, 5, 7 and q2 answers 3, 3. Counts afterwards:
# N(q1, 5) = 3, N(q1, 7) = 1, N(q2, 3) = 2.
STEP1 = {
    "completions": ["<answer>5</answer>", "so it is 5", "<answer>5.0</answer>", "<answer>7</answer>",
                    "<answer>3</answer>", "<answer>3</answer>"],
    "question": ["q1"] * 4 + ["q2"] * 2,
}
# Step 2: q1 answers 5, 7, 8 and one completion without a number; q2 answers 3, 4.
STEP2 = {
    "completions": ["<answer>5</answer>", "<answer>7</answer>", "<answer>8</answer>", "I do not know",
                    "<answer>3</answer>", "<answer>4</answer>"],
    "question": ["q1"] * 4 + ["q2"] * 2,
}
# b_ucb = min(1, 1/sqrt(N)) of each step-2 completion, with N counted before step 2;
# the unanswered one gets the floor b = 0
STEP2_BONUS = [1 / S3, 1.0, 1.0, 0.0, 1 / S2, 1.0]


def _centred(values, groups):
    """What GRPO's group centring does to a reward term."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    return values - np.array([values[groups == g].mean() for g in groups])


# --------------------------------------------------------------------------- formulas
def test_ucb_bonus_is_min_one_inverse_sqrt_count():
    # N = 0 and N = 1 both give 1 (the min), then 1/sqrt(N)
    np.testing.assert_allclose(ucb_bonus([0, 1, 2, 4, 9, 100]), [1, 1, 1 / S2, 0.5, 1 / 3, 0.1])
    with pytest.raises(ValueError, match=">= 0"):
        ucb_bonus([-1])


def test_ucb_values_by_hand_on_a_two_step_batch():
    r = OutcomeUCBReward()  # paper defaults: c = 0.2, UCB-Con with b0 = 0.5
    # first visit: every answer is new, b = 1, value 0.2 * (1 - 0.5)
    assert r(**STEP1) == pytest.approx([0.1] * 6)
    assert r.counts == {"q1": {"5": 3, "7": 1}, "q2": {"3": 2}}
    out = r.compute(**STEP2)
    np.testing.assert_allclose(out["bonus"], STEP2_BONUS)
    np.testing.assert_allclose(out["value"], [0.2 * (b - 0.5) for b in STEP2_BONUS])
    np.testing.assert_array_equal(out["count"], [3, 1, 0, -1, 2, 0])  # -1: no answer, not counted
    assert r.counts == {"q1": {"5": 4, "7": 2, "8": 1}, "q2": {"3": 3, "4": 1}}
    assert r.calls == 2


def test_rarer_answers_earn_more():
    r = OutcomeUCBReward()
    # history for q: "1" seen 9 times, "2" 4 times, "3" once
    r(completions=["1"] * 9 + ["2"] * 4 + ["3"], question=["q"] * 14)
    values = r(completions=["1", "2", "3", "4"], question=["q"] * 4)
    assert values[0] < values[1] < values[2] == values[3]  # N = 9, 4, 1, 0
    assert values == pytest.approx([0.2 * (1 / 3 - 0.5), 0.0, 0.1, 0.1])


@pytest.mark.parametrize("baseline", ["none", "mean", "constant"])
def test_baselines_by_hand_and_identical_after_group_centring(baseline):
    r = OutcomeUCBReward(outcome_explore_baseline=baseline, outcome_explore_coef=0.2, outcome_explore_b0=0.5)
    r(**STEP1)
    values = np.array(r(**STEP2))
    b = np.array(STEP2_BONUS)
    q1_mean, q2_mean = b[:4].mean(), b[4:].mean()  # UCB-Mean: the question's mean bonus in the step
    expected = {"none": 0.2 * b, "constant": 0.2 * (b - 0.5),
                "mean": 0.2 * (b - np.array([q1_mean] * 4 + [q2_mean] * 2))}[baseline]
    np.testing.assert_allclose(values, expected)
    # the documented consequence: GRPO's per-group centring removes any baseline
    np.testing.assert_allclose(_centred(values, STEP2["question"]), _centred(0.2 * b, STEP2["question"]), atol=1e-12)


def test_ucb_values_pure_function_matches_the_reward():
    b = np.array(STEP2_BONUS)
    np.testing.assert_allclose(ucb_values(b, STEP2["question"], 0.2, "constant", 0.5), 0.2 * (b - 0.5))
    with pytest.raises(ValueError, match="unknown baseline"):
        ucb_values(b, STEP2["question"], 0.2, "median")


def test_count_batch_option_counts_the_step_itself():
    r = OutcomeUCBReward(outcome_explore_count_batch=True, outcome_explore_baseline="none", outcome_explore_coef=1.0)
    # N(q1, 5) = 0 + 3 in the step, N(q1, 7) = 1, N(q2, 3) = 2
    assert r(**STEP1) == pytest.approx([1 / S3] * 3 + [1.0] + [1 / S2] * 2)
    # step 2: N(q1, 5) = 3 + 1, N(q1, 7) = 1 + 1, N(q1, 8) = 1, N(q2, 3) = 2 + 1, N(q2, 4) = 1
    assert r(**STEP2) == pytest.approx([0.5, 1 / S2, 1.0, 0.0, 1 / S3, 1.0])


def test_order_invariant_within_a_batch():
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(STEP2["completions"]))
    a, b = OutcomeUCBReward(), OutcomeUCBReward()
    history = rng.permutation(6)
    a(**STEP1)
    b(**{k: [v[i] for i in history] for k, v in STEP1.items()})  # the same history in another order
    shuffled = {k: [v[i] for i in perm] for k, v in STEP2.items()}
    np.testing.assert_allclose(np.array(a(**STEP2))[perm], b(**shuffled))
    assert a.counts == b.counts


def test_equivalent_answers_count_as_one():
    r = OutcomeUCBReward()
    # the correctness reward's normalisation: commas, $, trailing .00 and tags
    r(completions=["<answer>1,000</answer>", "1000", "total $1,000.00", "<answer>1000.0</answer>"], question=["q"] * 4)
    assert r.counts == {"q": {"1000": 4}}
    assert r.compute(completions=["<answer>1000</answer>"], question=["q"])["bonus"].tolist() == pytest.approx([0.5], abs=1e-12)


def test_missing_answers_floor_or_shared_outcome():
    floor = OutcomeUCBReward()
    # unanswered: b = 0 (never a novelty bonus), value c * (0 - b0), not counted
    assert floor(completions=["no idea", "<answer>4</answer>"], question=["q", "q"]) == pytest.approx([-0.1, 0.1])
    assert floor.counts == {"q": {"4": 1}}
    shared = OutcomeUCBReward(outcome_explore_missing="outcome")
    # all unanswered completions of a question are one outcome, counted like an answer
    assert shared(completions=["no idea", "nope"], question=["q", "q"]) == pytest.approx([0.1, 0.1])
    assert shared.counts == {"q": {NO_ANSWER: 2}}
    assert shared(completions=["still no idea"], question=["q"]) == pytest.approx([0.2 * (1 / S2 - 0.5)])


def test_keyed_by_each_completions_own_question():
    r = OutcomeUCBReward()
    # no question column: each completion's own prompt (last user turn of a chat) is its key
    prompts = ["What is 2 + 3?", [{"role": "user", "content": "What is 1 + 4?"}]]
    r(prompts=prompts, completions=["5", "5"])
    assert r.counts == {"What is 2 + 3?": {"5": 1}, "What is 1 + 4?": {"5": 1}}
    # a custom column name
    ids = OutcomeUCBReward(outcome_explore_key_column="qid")
    ids(completions=["5", "5"], qid=[7, 8], question=["same", "same"])
    assert ids.counts == {"7": {"5": 1}, "8": {"5": 1}}


def test_chat_completions_score_like_plain_text():
    plain, chat = OutcomeUCBReward(), OutcomeUCBReward()
    as_chat = {**STEP2, "completions": [[{"role": "assistant", "content": t}] for t in STEP2["completions"]]}
    plain(**STEP1)
    chat(**{**STEP1, "completions": [[{"role": "assistant", "content": t}] for t in STEP1["completions"]]})
    assert chat(**as_chat) == pytest.approx(plain(**STEP2))
    batch = OutcomeBatchReward()
    assert batch(**as_chat) == pytest.approx(batch(**STEP2))


def test_trl_keywords_ignored_and_metrics_logged():
    logged: dict[str, float] = {}
    r = OutcomeUCBReward()
    values = r(prompts=["p"] * 6, completion_ids=[[1]] * 6, answer=["5"] * 6, trainer_state=object(),
               log_extra=lambda *a: None, log_metric=logged.__setitem__, **STEP1)
    assert values == pytest.approx([0.1] * 6)
    assert logged["outcome_explore/ucb_questions"] == 2 and logged["outcome_explore/ucb_answers"] == 3
    assert logged["outcome_explore/ucb_new_answer_frac"] == pytest.approx(1.0, abs=1e-12)  # nothing seen before step 1
    assert logged["outcome_explore/distinct_answers_per_question"] == pytest.approx(1.5, abs=1e-12)  # q1: {5, 7}, q2: {3}
    r(log_metric=logged.__setitem__, **STEP2)
    assert logged["outcome_explore/no_answer_frac"] == pytest.approx(1 / 6)
    assert logged["outcome_explore/ucb_new_answer_frac"] == pytest.approx(2 / 5)  # 8 and 4 of 5 answered


def test_bad_input_is_reported():
    r = OutcomeUCBReward()
    with pytest.raises(ValueError, match="mismatched lengths"):
        r(completions=["5", "6"], question=["q"])
    with pytest.raises(ValueError, match="need prompts or a 'question' column"):
        r(completions=["5"])
    with pytest.raises(TypeError, match="must be a list"):
        r(completions="5", question=["q"])
    assert r.counts == {} and r.calls == 0  # a refused batch changes nothing


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"outcome_explore_coef": -0.1}, "must be >= 0"),
        ({"outcome_explore_coef": float("nan")}, "finite"),
        ({"outcome_explore_b0": float("inf")}, "finite"),
        ({"outcome_explore_coef": "0.2"}, "must be a float"),  # YAML string, caught at the option
        ({"outcome_explore_baseline": "median"}, "is not one of"),
        ({"outcome_explore_missing": "zero"}, "is not one of"),
        ({"outcome_explore_count_batch": 1}, "must be a bool"),
        ({"outcome_explore_key_column": ""}, "must name a dataset column"),
        ({"outcome_explore_c": 0.2}, r"unknown OutcomeExplorationConfig option\(s\) \[.outcome_explore_c.\] \(did you mean outcome_explore_coef"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        OutcomeExplorationConfig.from_dict(overrides)


def test_config_fields_share_one_prefix_and_carry_help():
    from dataclasses import fields

    for f in fields(OutcomeExplorationConfig):
        assert f.name.startswith("outcome_explore_") and f.metadata["help"]
    r = OutcomeUCBReward(OutcomeExplorationConfig(outcome_explore_coef=1.0), outcome_explore_b0=0.0)
    assert (r.config.outcome_explore_coef, r.config.outcome_explore_b0) == (1.0, 0.0)


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip_continues_identically(tmp_path):
    a = OutcomeUCBReward()
    a(**STEP1)
    path = a.save(tmp_path / "counts.json")
    b = OutcomeUCBReward()
    b.load(path)
    assert b.counts == a.counts and b.calls == a.calls == 1
    assert b(**STEP2) == a(**STEP2)
    assert b.state_dict() == a.state_dict()
    saved = json.loads(path.read_text())
    assert saved["format"] == "memrl.outcome_counts" and saved["version"] == 1


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "content, error, message",
    [
        ('{"format": "memrl.outcome_counts", "vers', ExplorationStateError, "truncated"),
        ('{"format": "memrl.episodic_memory", "version": 1}', ExplorationStateError, "not a memrl outcome-count"),
        ("[1, 2, 3]", ExplorationStateError, "not an outcome-count state"),
        ("VERSION2", ExplorationStateError, "version 2"),
        ("KEYCOL", ExplorationStateError, "keyed by column 'qid'"),
        ("ANSWERFN", ExplorationStateError, "normalised by 'other.fn'"),
        ("BADCOUNT", ExplorationStateError, "integer >= 1"),
        ("BADCALLS", ExplorationStateError, "'calls'"),
        (b"\xff\xfe\x00", ExplorationStateError, "truncated or not a JSON"),
    ],
)
def test_bad_state_files_are_refused_and_live_state_untouched(tmp_path, content, error, message):
    live = OutcomeUCBReward()
    live(**STEP1)
    before = live.state_dict()
    good = live.state_dict()
    edits = {
        "VERSION2": {**good, "version": 2},
        "KEYCOL": {**good, "key_column": "qid"},
        "ANSWERFN": {**good, "answer_fn": "other.fn"},
        "BADCOUNT": {**good, "counts": {"q1": {"5": 0}}},
        "BADCALLS": {**good, "calls": -1},
    }
    path = tmp_path / "counts.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(edits[content]) if content in edits else content)
    with pytest.raises(error, match=message):
        live.load(path)
    assert live.state_dict() == before
    with pytest.raises(FileNotFoundError, match="no outcome-count file"):
        live.load(tmp_path / "missing.json")
    assert live.state_dict() == before


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    r = OutcomeUCBReward()
    r(**STEP1)
    path = r.save(tmp_path / "counts.json")
    before = path.read_text()
    r(**STEP2)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("memrl.io.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        r.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["counts.json"]  # no temp file left behind


# --------------------------------------------------------------------------- pickling, names
def test_pickle_round_trip_keeps_counts_and_continues():
    r = OutcomeUCBReward()
    r(**STEP1)
    copy = pickle.loads(pickle.dumps(r))
    assert copy.__name__ == "outcome_ucb_reward" and copy.counts == r.counts
    assert copy(**STEP2) == r(**STEP2)
    batch = pickle.loads(pickle.dumps(OutcomeBatchReward()))
    assert batch.__name__ == "outcome_batch_reward" and batch(**STEP2) == OutcomeBatchReward()(**STEP2)


# --------------------------------------------------------------------------- batch variant
def test_batch_penalty_by_hand():
    r = OutcomeBatchReward()  # c = 0.2
    # q1 (n = 4): the three 5s each repeat 2 others, -(1/4) * 2; the 7 none. q2 (n = 2): 3, 3 repeat 1.
    assert r(**STEP1) == pytest.approx([-0.2 * 0.5] * 3 + [0.0] + [-0.2 * 0.5] * 2)
    # step 2: all answers of q1 distinct; the unanswered one gets the floor -(n - 1)/n = -3/4
    out = r.compute(**STEP2)
    np.testing.assert_allclose(out["penalty"], [0, 0, 0, -0.75, 0, 0])
    np.testing.assert_allclose(out["value"], 0.2 * out["penalty"])
    # stateless: the same batch again scores the same
    assert r(**STEP1) == pytest.approx([-0.1] * 3 + [0.0] + [-0.1] * 2)


def test_batch_penalty_pure_function_and_shared_missing_outcome():
    assert batch_repeat_penalty(["1000", "1000", None], ["q"] * 3).tolist() == pytest.approx([-1 / 3, -1 / 3, -2 / 3])
    shared = OutcomeBatchReward(outcome_explore_missing="outcome", outcome_explore_coef=1.0)
    # two unanswered completions are one repeated outcome
    assert shared(completions=["?", "??", "4"], question=["q"] * 3) == pytest.approx([-1 / 3, -1 / 3, 0.0])


def test_batch_order_invariant_and_equivalent_answers():
    r = OutcomeBatchReward(outcome_explore_coef=1.0)
    texts = ["<answer>1,000</answer>", "1000", "<answer>2</answer>", "$1,000"]
    assert r(completions=texts, question=["q"] * 4) == pytest.approx([-0.5, -0.5, 0.0, -0.5])
    perm = [2, 0, 3, 1]
    assert r(completions=[texts[i] for i in perm], question=["q"] * 4) == pytest.approx([0.0, -0.5, -0.5, -0.5])


# --------------------------------------------------------------------------- two processes
def _shard(step: dict, rank: int) -> dict:
    # a GRPO group straddles the ranks: rank 0 gets q1's first three, rank 1 the rest
    cut = 3
    return {k: (v[:cut] if rank == 0 else v[cut:]) for k, v in step.items()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ucb, batch = OutcomeUCBReward(), OutcomeBatchReward()
        scored = {"ucb": [], "batch": []}
        for step in (STEP1, STEP2):
            scored["ucb"].append(ucb(**_shard(step, rank)))
            scored["batch"].append(batch(**_shard(step, rank)))
        ucb.save(os.path.join(out_dir, f"counts{rank}.json"))
        with open(os.path.join(out_dir, f"scored{rank}.json"), "w") as f:
            json.dump(scored, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_identical_counts_and_score_like_one(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    counts = [json.loads((tmp_path / f"counts{r}.json").read_text())["counts"] for r in (0, 1)]
    single_ucb, single_batch = OutcomeUCBReward(), OutcomeBatchReward()
    scored = [json.loads((tmp_path / f"scored{r}.json").read_text()) for r in (0, 1)]
    for i, step in enumerate((STEP1, STEP2)):
        assert scored[0]["ucb"][i] + scored[1]["ucb"][i] == pytest.approx(single_ucb(**step))
        assert scored[0]["batch"][i] + scored[1]["batch"][i] == pytest.approx(single_batch(**step))
    assert counts[0] == counts[1] == single_ucb.counts


def test_a_ucb_copy_in_another_process_refuses_unless_it_claims_the_process():
    """AsyncGRPO pickles reward functions into a spawned child: a copy's counts would never reach a
    checkpoint, so it refuses (naming the service client), and counts once it claims the process."""
    from helpers.trl_async_scoring import compute_in_child, spawn_child

    ucb = OutcomeUCBReward()
    refused = spawn_child(compute_in_child, ucb, STEP1, False, timeout=120)
    assert refused.startswith("RuntimeError: OutcomeUCBReward was built in process")
    assert "answer counts" in refused and "RemoteMemoryReward" in refused
    here = OutcomeUCBReward()
    here(**STEP1)
    assert spawn_child(compute_in_child, ucb, STEP1, True, timeout=120) == here.num_answers == 3  # q1: 5, 7; q2: 3
