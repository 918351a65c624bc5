"""JobPoller cadence and caching, with a fake clock (no sleeping)."""

from __future__ import annotations

from remote.cluster import JobState, JobStatus
from remote.poller import JobPoller


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeScheduler:
    def __init__(self):
        self.states: dict[str, JobStatus] = {}
        self.calls: list[list[str]] = []
        self.fail = False

    def set(self, job_id, state, exit_code=None):
        self.states[job_id] = JobStatus(job_id=job_id, state=state, exit_code=exit_code)

    def __call__(self, job_ids):
        self.calls.append(list(job_ids))
        if self.fail:
            raise RuntimeError("ssh down")
        return {j: self.states[j] for j in job_ids if j in self.states}


def make():
    clock, scheduler = FakeClock(), FakeScheduler()
    return clock, scheduler, JobPoller(scheduler, active_s=2, idle_max_s=30, clock=clock)


def test_one_batched_call_for_all_tracked_jobs():
    clock, scheduler, poller = make()
    for j in ("1", "2", "3"):
        scheduler.set(j, JobState.RUNNING)
        poller.track(j)
    poller.poll_if_due()
    assert scheduler.calls == [["1", "2", "3"]]


def test_backs_off_while_nothing_changes_and_resets_on_change():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.RUNNING)
    poller.track("1")
    waits = []
    for _ in range(6):
        poller.poll()
        waits.append(poller.wait_s())
        clock.now += poller.wait_s()
    assert waits == [2, 4, 8, 16, 30, 30]  # first poll is a change (unknown -> RUNNING)
    scheduler.set("1", JobState.COMPLETING)
    assert poller.poll() == {"1": scheduler.states["1"]}
    assert poller.wait_s() == 2


def test_not_due_means_no_call():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.PENDING)
    poller.track("1")
    poller.poll_if_due()
    clock.now += 1.0
    assert poller.poll_if_due() is None
    clock.now += 1.0
    assert poller.poll_if_due() == {}
    assert len(scheduler.calls) == 2


def test_terminal_states_are_cached_and_never_polled_again():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.FAILED, exit_code=3)
    scheduler.set("2", JobState.RUNNING)
    poller.track("1")
    poller.track("2")
    poller.poll()
    assert poller.active_ids == ["2"]
    clock.now += 100
    poller.poll()
    assert scheduler.calls[-1] == ["2"]
    assert poller.statuses()["1"].exit_code == 3


def test_terminal_state_without_exit_code_is_confirmed_once_more():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.FAILED)  # squeue saw it end; sacct has not caught up
    poller.track("1")
    poller.poll()
    assert poller.active_ids == ["1"]
    scheduler.set("1", JobState.FAILED, exit_code=3)
    poller.poll()
    assert poller.active_ids == [] and poller.statuses()["1"].exit_code == 3


def test_nothing_tracked_means_no_polling():
    clock, scheduler, poller = make()
    assert poller.wait_s() is None and poller.poll_if_due() is None and scheduler.calls == []


def test_failed_poll_keeps_states_and_backs_off():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.RUNNING)
    poller.track("1")
    poller.poll()
    scheduler.fail = True
    clock.now += poller.wait_s()
    assert poller.poll() == {}
    assert isinstance(poller.last_error, RuntimeError)
    assert poller.statuses()["1"].state == JobState.RUNNING
    assert poller.wait_s() == 4


def test_elapsed_time_alone_is_not_a_change_so_running_jobs_back_off_to_30_s():
    clock, scheduler = FakeClock(), FakeScheduler()
    poller = JobPoller(scheduler, clock=clock)  # the defaults: 5 s rising to 30 s
    waits = []
    for tick in range(7):
        scheduler.states["1"] = JobStatus("1", JobState.RUNNING, elapsed_s=10.0 * tick, nodelist="node[1-2]")
        poller.track("1")
        poller.poll()
        waits.append(poller.wait_s())
        clock.now += poller.wait_s()
    assert waits == [5, 10, 20, 30, 30, 30, 30]


def test_a_new_reason_exit_code_or_node_list_is_a_change():
    clock, scheduler, poller = make()
    scheduler.states["1"] = JobStatus("1", JobState.PENDING, reason="Priority")
    poller.track("1")
    poller.poll()
    for status in (JobStatus("1", JobState.PENDING, reason="Resources"),
                   JobStatus("1", JobState.RUNNING, nodelist="node1"),
                   JobStatus("1", JobState.RUNNING, nodelist="node[1-2]")):
        clock.now += 100
        poller.poll()  # nothing new: backs off
        assert poller.wait_s() > 2
        scheduler.states["1"] = status
        assert poller.poll() == {"1": status}
        assert poller.wait_s() == 2


def test_a_watcher_caps_the_wait_no_lower_than_the_floor():
    clock, scheduler = FakeClock(), FakeScheduler()
    poller = JobPoller(scheduler, clock=clock)
    scheduler.set("1", JobState.RUNNING)
    poller.track("1")
    for _ in range(5):
        poller.poll()
        clock.now += poller.wait_s()
    assert poller.wait_s() == 0 and poller._interval == 30
    poller.poll()
    poller.watch("run screen")
    assert poller.wait_s() == 5  # brought forward at once
    poller.watch("impatient", every_s=0.01)
    clock.now += 5
    poller.poll()
    assert poller.wait_s() == 1  # WATCH_FLOOR_S
    poller.unwatch("impatient")
    poller.unwatch("run screen")
    clock.now += 1
    poller.poll()
    assert poller.wait_s() == 30


def test_wake_makes_the_next_poll_due_now():
    clock, scheduler, poller = make()
    scheduler.set("1", JobState.RUNNING)
    poller.track("1")
    poller.poll()
    assert poller.poll_if_due() is None
    poller.wake()
    assert poller.poll_if_due() == {}
