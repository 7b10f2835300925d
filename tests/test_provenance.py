"""Results files: what is written comes back, with where it came from, and a missing file says what to run."""

from __future__ import annotations

import subprocess

import pytest

from experiments import provenance


def test_results_round_trip_with_provenance(tmp_path):
    path = provenance.write_results(
        tmp_path / "deep" / "sec.json", {"scale": "cpu"}, {"r": [0.5, -1.25e-7]}
    )
    back = provenance.read_results(path)
    assert back["config"] == {"scale": "cpu"} and back["results"] == {
        "r": [0.5, -1.25e-7]
    }
    assert set(back["provenance"]) == {"commit", "hardware", "python", "torch", "date"}
    assert back["provenance"]["hardware"].strip() and back["provenance"][
        "date"
    ].startswith("20")


def test_missing_results_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the full-scale command"):
        provenance.read_results(tmp_path / "nothing.json")


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_commit_is_tagged_uncommitted_when_tracked_files_changed(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("a\n")
    _git(repo, "add", "f.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    monkeypatch.chdir(repo)
    clean = provenance.provenance()["commit"]
    assert len(clean) == 40 and not clean.endswith("+uncommitted")
    (repo / "untracked.txt").write_text("untracked files do not count\n")
    assert provenance.provenance()["commit"] == clean
    (repo / "f.txt").write_text("b\n")
    assert provenance.provenance()["commit"] == clean + "+uncommitted"


def test_commit_is_unknown_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.provenance()["commit"] == "unknown"
