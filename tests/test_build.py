"""What the book build changes in an executed chapter before rendering it: only what is shown."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_notebook

from tools.build_book import fold_for_reading


def _tags(*cells):
    nb = new_notebook(cells=list(cells))
    return [cell.metadata.get("tags", []) for cell in fold_for_reading(nb).cells]


def test_solutions_fold_and_the_injected_parameters_replace_the_defaults():
    assert _tags(
        new_code_cell("quick = True", metadata={"tags": ["parameters", "hide-cell"]}),
        new_code_cell("quick = False", metadata={"tags": ["injected-parameters"]}),
        new_code_cell("answer = 42", metadata={"tags": ["solution"]}),
        new_code_cell("answer = 42", metadata={"tags": ["solution", "hide-input"]}),
        new_code_cell("x = 1"),
    ) == [
        ["parameters", "remove-cell"],
        ["injected-parameters", "hide-cell"],
        ["solution", "hide-cell"],
        ["solution", "hide-input"],
        [],
    ]


def test_parameters_stay_folded_when_nothing_was_injected():
    cell = new_code_cell("quick = True", metadata={"tags": ["parameters", "hide-cell"]})
    assert _tags(cell) == [["parameters", "hide-cell"]]
