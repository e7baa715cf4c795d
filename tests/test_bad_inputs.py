"""Bad input is refused in one line: every case of ``tests/bad_inputs.py`` (config files, dotted
overrides, command-line arguments, data folders, run directories) prints exactly one line on stderr,
``ddpmlab: error: ...``, exits with status 2, shows no traceback and leaves every file of the workspace
(its runs, configs and data) byte-identical; the table in docs/trust.md is made from the same cases."""

from __future__ import annotations

import pytest

from bad_inputs import CASES, MARKER, build_workspace, collect, doc_table, render_table, run_case, snapshot


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny trained runs (toy, class-conditional toy, image, text, classifier), broken run directories,
    bad config files and bad data folders (see ``bad_inputs.build_workspace``)."""
    ws = tmp_path_factory.mktemp("bad_inputs")
    build_workspace(ws)
    return ws


@pytest.mark.parametrize("case", CASES, ids=[f"{n:03d}-{case.kind}" for n, case in enumerate(CASES, 1)])
def test_bad_input_gives_one_line_status_2_and_changes_no_file(case, workspace):
    before = snapshot(workspace)
    code, _, err = run_case(case, workspace)
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ddpmlab: error: "), err
    assert case.expect in lines[0], lines[0]
    assert snapshot(workspace) == before  # nothing written, nothing changed, nothing deleted
    assert not (workspace / MARKER).exists()  # no planted code ran


def test_at_least_50_distinct_bad_inputs_of_every_kind():
    assert len({case.argv for case in CASES}) == len(CASES) >= 50
    assert {case.kind for case in CASES} == {"config", "override", "argument", "data", "run"}


def test_the_table_in_docs_trust_md_is_made_from_these_cases(workspace):
    """Regenerate it with ``python tests/bad_inputs.py`` when a case or a message changes."""
    assert doc_table() == render_table(collect(workspace))
