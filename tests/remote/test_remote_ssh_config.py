"""Resolving a host alias through an ssh_config file (no network)."""

from __future__ import annotations

import pytest

from remote.ssh import SshError, known_hosts_name, resolve_target


def test_config_fields_are_applied_and_explicit_arguments_win(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host gpu\n  HostName login.example.org\n  User alice\n  Port 2200\n  IdentityFile ~/.ssh/id_gpu\n"
        "  ProxyJump bastion\n  IdentitiesOnly yes\n  UserKnownHostsFile /etc/dinf/known_hosts\n"
        "Host legacy\n  HostName old.example.org\n  ProxyCommand nc -X connect -x proxy:3128 %h %p\n"
    )
    gpu = resolve_target("gpu", ssh_config=str(config))
    assert (gpu.hostname, gpu.user, gpu.port, gpu.proxy_jump) == ("login.example.org", "alice", 2200, "bastion")
    assert gpu.key_files[0].endswith("/.ssh/id_gpu") and gpu.identities_only
    assert gpu.known_hosts == "/etc/dinf/known_hosts"
    assert resolve_target("bob@gpu:2201", ssh_config=str(config)).user == "bob"
    assert resolve_target("bob@gpu:2201", ssh_config=str(config)).port == 2201
    assert resolve_target("gpu", ssh_config=str(config), user="carol", port=22).port == 22
    legacy = resolve_target("legacy", ssh_config=str(config))
    assert legacy.proxy_command == "nc -X connect -x proxy:3128 old.example.org 22"


def test_no_config_file_means_the_alias_is_the_host(tmp_path):
    target = resolve_target("cluster.example.org", ssh_config=str(tmp_path / "missing"))
    assert (target.hostname, target.port, target.user) == ("cluster.example.org", 22, None)


@pytest.mark.parametrize("bad", ["", "two words", "host:port"])
def test_malformed_host_is_refused_by_name(bad):
    with pytest.raises(SshError, match="SSH"):
        resolve_target(bad, ssh_config=None)


def test_known_hosts_names_brackets_non_default_ports():
    assert known_hosts_name("h", 22) == "h" and known_hosts_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"
