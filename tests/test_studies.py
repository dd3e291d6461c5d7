"""Every study page regenerates byte-identically from its committed result files (issue 24).

Each study's report step runs on the committed files with its outputs sent to a temporary
folder, then the outputs are compared with the committed ones: a change to the library that
would silently rewrite an archived result shows up here. Plots are compared only under the
matplotlib version that drew them (the PNG records it; another version draws other bytes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.studies import STUDIES, study_script


def assert_same_files(made: Path, committed: Path, names: list[str]) -> None:
    import matplotlib

    drawn_here = f"Matplotlib version{matplotlib.__version__},".encode()
    for name in names:
        new, old = (made / name).read_bytes(), (committed / name).read_bytes()
        if name.endswith(".png") and drawn_here not in old:
            continue  # drawn by another matplotlib version
        same = new == old  # compared outside the assert: pytest's diff of two large PNGs takes many minutes
        assert same, f"{committed / name} does not regenerate byte-identically"


def copy_committed(src: Path, dst: Path) -> None:
    """The files under ``src`` that git tracks, copied to ``dst``: a run still training beside the
    checkout (untracked until it finishes) must not change the regenerated page. Where git cannot
    list them (no repository), everything under ``src``."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z", "."], cwd=src, capture_output=True)
    if listed.returncode != 0:
        shutil.copytree(src, dst)
        return
    for rel in filter(None, listed.stdout.decode().split("\0")):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)


@pytest.mark.parametrize("name", ["cpu_study_v1", "cpu_study_v2", "cpu_study_v3"])
def test_cpu_study_pages_regenerate_from_the_committed_runs(name, tmp_path):
    study = study_script(name)
    # the aggregate writes results.json beside the runs it reads: run it on a copy
    copy_committed(STUDIES / name / "results", tmp_path / "results")
    if name == "cpu_study_v3":  # its page path is one option; the second study's runs are read in place
        args = study.parse_args(["--aggregate-only", "--out", str(tmp_path / "results"),
                                 "--page", str(tmp_path / "results.md")])
    else:
        args = study.parse_args(["--aggregate-only", "--out", str(tmp_path / "results"), "--docs", str(tmp_path)])
    if name == "cpu_study_v2":
        args.arith_level = study.chosen_level(args)  # as main() does: the level the probe chose
    data = study.aggregate(args)
    assert_same_files(tmp_path, STUDIES / name, ["results.md", "curves.png", "accuracy.png"])
    assert_same_files(tmp_path / "results", STUDIES / name / "results", ["results.json"])
    if name == "cpu_study_v3":  # the README's table is the study's, regenerated
        assert study.readme_block(data) in (STUDIES.parent / "README.md").read_text()


def test_poem_study_pages_regenerate_from_the_committed_results(tmp_path):
    first = study_script("poem_study_v1")
    first.write_docs(json.loads((STUDIES / "poem_study_v1" / "results" / "results.json").read_text()), tmp_path,
                     first.Args())
    assert_same_files(tmp_path, STUDIES / "poem_study_v1", ["results.md", "accuracy.png"])

    second = study_script("poem_study_v2")
    second.write_docs(json.loads((STUDIES / "poem_study_v2" / "results" / "results.json").read_text()), tmp_path)
    assert_same_files(tmp_path, STUDIES / "poem_study_v2", ["results.md", "accuracy.png"])

    third = study_script("poem_study_v3")
    results = STUDIES / "poem_study_v3" / "results"
    data = third.read_results(results / "results.json")
    third.write_docs(data, tmp_path / "v3", third.read_replay(results / "replay_v2.json"))
    assert_same_files(tmp_path / "v3", STUDIES / "poem_study_v3", ["results.md", *(["accuracy.png"] if data["runs"] else [])])
    assert third.readme_block(data) in (STUDIES.parent / "README.md").read_text()


def test_semantics_page_regenerates_from_its_results():
    study = study_script("semantics")
    data = json.loads((STUDIES / "semantics" / "results" / "results.json").read_text())
    assert study.markdown(data) == (STUDIES / "semantics" / "results.md").read_text()


def test_the_third_cpu_study_counts_groups_without_correctness_variance():
    study = study_script("cpu_study_v3")
    # 2 groups per step: the last 10 steps had 0, 0, ..., 1 groups whose correctness varied
    assert study.flat_correctness_share([2, 2] + [0] * 9 + [1], 2) == pytest.approx(0.95, abs=1e-12)
    assert study.flat_correctness_share([2] * 12, 2) == pytest.approx(0.0, abs=1e-12)
    assert study.flat_correctness_share([0] * 9, 2) is None  # fewer than 10 logged steps
