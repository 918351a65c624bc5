"""The connection state machine: what a poll, a failure or a refusal means for a cluster's link."""

from __future__ import annotations

import pytest

from remote.errors import AuthenticationFailed, ClusterError, HostKeyChanged, HostKeyUnknown, HostUnreachable
from tui.core.connection import (
    Connections,
    LinkState,
    PollVerdict,
    Trouble,
    classify,
    needs_the_user,
    problem_text,
)


def _links() -> Connections:
    return Connections({"local": True, "gpu": False, "cpu": False})


def test_starting_states_and_healthy_state_follow_the_backend():
    links = _links()
    assert links["local"].state is LinkState.LOCAL and links["gpu"].state is LinkState.IDLE
    assert links.healthy("local") is LinkState.LOCAL and links.healthy("gpu") is LinkState.CONNECTED
    assert links.remote_names() == ["cpu", "gpu"] and not links.is_remote("local")


def test_set_reports_changes_only_and_bumps_the_version():
    links = _links()
    assert links.set("gpu", LinkState.CONNECTED)
    version = links.version
    assert not links.set("gpu", LinkState.CONNECTED)
    assert links.version == version
    assert links.set("gpu", LinkState.RECONNECTING, "connection reset\nsecond line")
    assert links["gpu"].detail == "connection reset"  # one line for the bar


def test_a_new_failure_is_probed_once_then_reconnecting():
    links = _links()
    links.set("gpu", LinkState.CONNECTED)
    assert links.polled(["gpu"], {"gpu": "timed out"}) == {"gpu": PollVerdict.PROBE}
    links.set("gpu", LinkState.RECONNECTING, "timed out")
    assert links.polled(["gpu"], {"gpu": "timed out"}) == {"gpu": PollVerdict.RECONNECTING}
    assert links.polled(["gpu"], {}) == {"gpu": PollVerdict.HEALTHY}


@pytest.mark.parametrize("waiting", [LinkState.REFUSED, LinkState.FAILED])
def test_a_link_waiting_for_the_user_is_left_alone_by_polls(waiting):
    links = _links()
    links.set("gpu", waiting)
    assert links.polled(["gpu"], {"gpu": "still failing"}) == {}


def test_healthy_clusters_without_change_are_not_reported():
    links = _links()
    links.set("gpu", LinkState.CONNECTED)
    assert links.polled(["gpu", "local"], {}) == {}


def test_an_interrupted_stream_reconnects_unless_refused():
    links = _links()
    assert links.stream_interrupted("gpu") is LinkState.RECONNECTING
    links.set("gpu", LinkState.REFUSED)
    assert links.stream_interrupted("gpu") is None


def test_failures_are_classified_by_type_not_by_name():
    unknown = HostKeyUnknown("unknown", host="h", key_type="ssh-ed25519", fingerprint="SHA256:x")
    changed = HostKeyChanged("changed", host="h", key_type="ssh-ed25519", fingerprint="SHA256:y", expected="SHA256:x")
    assert classify(unknown) is Trouble.HOST_KEY and classify(changed) is Trouble.HOST_KEY
    assert Connections.host_key_detail(changed) == "host key changed"
    assert classify(AuthenticationFailed("refused")) is Trouble.LOGIN

    class AuthenticationLookalike(ClusterError):  # named like one, is not one
        pass

    assert classify(AuthenticationLookalike("x")) is Trouble.TRANSIENT
    assert classify(HostUnreachable("no route")) is Trouble.TRANSIENT
    assert needs_the_user(unknown) and not needs_the_user(OSError("reset"))


def test_problem_text_lists_a_specs_problems_by_field():
    class Invalid(ValueError):
        problems = {"nodes": "must be at least 1", "mode": "unknown"}

    assert problem_text(Invalid()) == "mode: unknown; nodes: must be at least 1"
    assert problem_text(RuntimeError()) == "RuntimeError"
