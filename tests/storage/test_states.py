"""The run-state vocabulary: one definition, equal to the scheduler's, importable without sqlmodel."""

from __future__ import annotations

import subprocess
import sys

from remote.cluster import TERMINAL_STATES
from storage import models, states


def test_scheduler_finished_states_are_remote_terminal_states():
    assert states.SCHEDULER_FINISHED_STATES == {s.value for s in TERMINAL_STATES}
    assert states.FINISHED_STATES == states.SCHEDULER_FINISHED_STATES | {states.SUBMIT_FAILED, states.IMPORTED}


def test_every_finished_state_is_done_or_failed_never_both():
    assert states.DONE_STATES | states.FAILED_STATES == states.FINISHED_STATES
    assert not states.DONE_STATES & states.FAILED_STATES
    assert states.DRAFT not in states.FINISHED_STATES


def test_models_reexport_the_same_objects():
    assert models.FINISHED_STATES is states.FINISHED_STATES
    assert (models.DRAFT, models.SUBMIT_FAILED, models.IMPORTED) == (states.DRAFT, states.SUBMIT_FAILED, states.IMPORTED)


def test_states_import_without_sqlmodel():
    code = "import sys, storage.states; print(sorted(m for m in ('sqlmodel', 'sqlalchemy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_every_scheduler_state_is_live_or_finished_except_unknown():
    from remote.cluster import JobState

    scheduler = {s.value for s in JobState} - {"UNKNOWN"}
    assert states.LIVE_STATES | states.SCHEDULER_FINISHED_STATES == scheduler
    assert not states.LIVE_STATES & states.FINISHED_STATES
