"""The paper's numbers: each finds ours in its results file, or says it is not there yet."""

from __future__ import annotations

from experiments.paper_numbers import PaperNumber
from experiments.provenance import write_results


def test_paper_numbers_follow_keys_and_list_positions(tmp_path):
    experiments = {"e": {"scale": "cpu", "a": {"b": [0.5, 0.25]}}}
    write_results(tmp_path / "f.json", {}, {"experiments": experiments})
    number = PaperNumber("Fig. 9", "x", 0.1, "f", "e", ("a", "b", 1))
    assert number.ours(tmp_path) == (0.25, "cpu")
    for path in (("a", "b", 2), ("a", "c"), ("a", "b", "x")):
        assert PaperNumber("F", "x", 0.1, "f", "e", path).ours(tmp_path) is None
    assert PaperNumber("F", "x", 0.1, "g", "e", ("a",)).ours(tmp_path) is None
