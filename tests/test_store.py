"""experiments.store.ResultsStore: a section's results file under a root passed in, written with
provenance, read back, and searched for the experiment a config ran (once sec44.stored_scores)."""

from __future__ import annotations

import pytest

from experiments.configs import section44
from experiments.pipeline import Lab
from experiments.provenance import read_results
from experiments.store import ResultsStore


def test_a_section_is_a_file_under_the_root_and_round_trips(tmp_path):
    store = ResultsStore(tmp_path / "results")
    assert store.path("sec41") == tmp_path / "results" / "sec41.json"
    assert not store.exists("sec41")
    assert store.results("sec41") == {"experiments": {}}
    store.write("sec41", {"scale": "cpu"}, {"experiments": {"e": {"r": 0.5}}})
    assert store.exists("sec41")
    back = store.read("sec41")
    assert back["config"] == {"scale": "cpu"}
    assert back["results"] == store.results("sec41") == {"experiments": {"e": {"r": 0.5}}}
    assert set(back["provenance"]) == {"commit", "hardware", "python", "torch", "date"}
    # the chapters still read the same file by its path
    assert read_results(store.path("sec41")) == back


def test_record_files_an_experiment_with_its_scale_and_keeps_the_others(tmp_path):
    store = ResultsStore(tmp_path)
    done = store.results("sec43")
    store.record("sec43", done, "a", "quick", lambda: {"config": {"x": 1}, "v": 2})
    other = store.results("sec43")
    store.record("sec43", other, "b", "quick", lambda: {"config": {"x": 2}, "v": 3})
    stored = store.read("sec43")
    assert set(stored["results"]["experiments"]) == {"a", "b"}
    assert stored["results"]["experiments"]["a"]["scale"] == "quick"
    assert stored["config"]["experiments"] == {"a": {"x": 1}, "b": {"x": 2}}


def test_a_missing_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the full-scale command"):
        ResultsStore(tmp_path).read("sec44")


def _store_with_two_experiments(tmp_path):
    """A small section-4.1-like results file, written as ``record_experiment`` writes it."""
    c, d = section44("quick").values()
    done = {
        "experiments": {
            "other": {"config": d.as_dict(), "scores": [9.0]},
            "match": {"config": c.as_dict(), "scores": [1.0, -2.0, 3.0]},
        }
    }
    store = ResultsStore(tmp_path)
    store.write_section("sec41", done, "quick")
    return store, c, d


def test_find_is_none_for_a_missing_file(tmp_path):
    assert ResultsStore(tmp_path).find("sec41", section44("quick")["C"]) is None


def test_find_is_none_for_a_config_the_file_does_not_hold(tmp_path):
    store, c, _ = _store_with_two_experiments(tmp_path)
    assert store.find("sec41", c.replace(cg_iters=c.cg_iters + 1)) is None
    assert store.find("sec41", c.replace(seed=c.seed + 1)) is None


def test_find_returns_the_experiment_with_the_same_config(tmp_path):
    store, c, d = _store_with_two_experiments(tmp_path)
    assert store.find("sec41", c)["scores"] == [1.0, -2.0, 3.0]
    assert store.find("sec41", d)["scores"] == [9.0]
    # stored before configs had a device, or run on another one: still the same experiment
    assert store.find("sec41", c.replace(device="cpu"))["scores"] == [1.0, -2.0, 3.0]


def test_holding_splits_a_results_path_into_store_and_section(tmp_path):
    store, section = ResultsStore.holding(tmp_path / "sec42.json")
    assert (store.root, section) == (tmp_path, "sec42")
    with pytest.raises(ValueError, match="results file"):
        ResultsStore.holding(tmp_path / "sec42.txt")


def test_a_lab_from_a_path_checks_it_is_the_sections_file(tmp_path):
    lab = Lab.of(tmp_path / "sec42.json", "sec42")
    assert lab.store.path("sec42") == tmp_path / "sec42.json"
    with pytest.raises(ValueError, match="sec42.json"):
        Lab.of(tmp_path / "other.json", "sec42")
    with pytest.raises(ValueError, match="needs a store"):
        Lab.of(Lab(), "sec42")
    assert Lab.of(ResultsStore(tmp_path), "sec42").store.root == tmp_path
