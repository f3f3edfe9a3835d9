"""End to end: the store's path and lock timeout from the config's ipam section (db-path,
db-connection-timeout) and from the environment (IPAM_DB_PATH, IPAM_DB_CONNECTION_TIMEOUT).

The config wins: it is what every call for a network carries, whereas a runtime may not pass
its environment to every call (podman's cleanup DEL gets a bare one; tests/test_podman.py).
"""

import time

import pytest

from conftest import Plugin, hold_store_lock
from e2e_support import V4, add_address, assert_held, delete, failed, held_addresses, netconf, store_files


@pytest.fixture
def stores(artifact, tmp_path):
    """(through the config, through the environment): two Plugins on two stores of one tmp_path."""
    return Plugin(artifact, tmp_path / "conf" / "ipam.db"), Plugin(artifact, tmp_path / "env" / "ipam.db")


def keyed(plugin, **ipam):
    return {**V4, "db-path": str(plugin.db_path), **ipam}


def test_db_path_in_the_config_wins_over_ipam_db_path(stores):
    conf, env = stores
    # env.run sets IPAM_DB_PATH to the other store: the config's key wins over it.
    assert add_address(env, keyed(conf, id="a")) == "10.0.0.2"
    assert set(held_addresses(conf)) == {"10.0.0.2"}
    assert not env.db_path.parent.exists()


def test_add_and_del_meet_in_the_configs_store_whatever_the_environment(stores):
    """The podman leak in miniature: the ADD is run with IPAM_DB_PATH, the DEL without it."""
    conf, env = stores
    assert add_address(env, keyed(conf), env={"CNI_CONTAINERID": "c1"}) == "10.0.0.2"
    assert_held(conf, V4, "10.0.0.2")
    delete(env, keyed(conf), env={"CNI_CONTAINERID": "c1", "IPAM_DB_PATH": None})
    assert held_addresses(conf) == {}
    assert not env.db_path.parent.exists()


def test_without_the_key_ipam_db_path_is_the_store(stores):
    conf, env = stores
    assert add_address(env, {**V4, "id": "a"}) == "10.0.0.2"
    assert set(held_addresses(env)) == {"10.0.0.2"}
    assert not conf.db_path.parent.exists()


def test_no_unknown_key_warning_for_the_store_keys(stores):
    conf, env = stores
    outcome = env.run("ADD", netconf(keyed(conf, **{"db-connection-timeout": "2s"})))
    assert (outcome.code, outcome.stderr) == (0, ""), outcome


def test_db_connection_timeout_in_the_config_wins(stores):
    conf, env = stores
    add_address(conf, keyed(conf, id="a"))
    before = store_files(conf)
    with hold_store_lock(conf.db_path):
        began = time.monotonic()
        outcome = env.run("ADD", netconf(keyed(conf, id="b", **{"db-connection-timeout": "300ms"})),
                          env={"IPAM_DB_CONNECTION_TIMEOUT": "60s"})
        elapsed = time.monotonic() - began
    failed(outcome, 11, str(conf.db_path), "0.3s", "db-connection-timeout")
    assert 0.3 <= elapsed < 5, elapsed
    assert store_files(conf) == before
    # A number is seconds, and the environment's bad value is never read when the config has one.
    assert add_address(env, keyed(conf, id="b", **{"db-connection-timeout": 2}),
                       env={"IPAM_DB_CONNECTION_TIMEOUT": "banana"}) == "10.0.0.3"


BAD_VALUES = [
    ("db-path", "ipam.db", "'ipam.db' is a relative path"),
    ("db-path", "", "'' is a relative path"),
    ("db-path", "/var/lib/ecs-ipam/", "names a directory"),
    ("db-path", 7, "db-path must be a string"),
    ("db-connection-timeout", "5x", "'5x' is not a duration"),
    ("db-connection-timeout", -1, "-1 must be a finite duration of 0 or more"),
    ("db-connection-timeout", False, "false"),
]


@pytest.mark.parametrize("key, value, fragment", BAD_VALUES)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_a_bad_store_key_is_code_7_and_touches_no_store(stores, key, value, fragment, command):
    conf, env = stores
    add_address(conf, keyed(conf, id="a"))
    before = store_files(conf)
    # The id holds an address; a DEL with a bad store key must not release it from some other store.
    doc = netconf({**keyed(conf, id="a"), key: value}, **{"cni.dev/valid-attachments": []})
    failed(env.run(command, doc), 7, key, fragment)
    assert store_files(conf) == before
    assert not env.db_path.parent.exists()
    assert_held(conf, V4, "10.0.0.2", "a")


def test_the_db_tools_take_the_configs_store_with_db(stores):
    conf, env = stores
    add_address(env, keyed(conf, id="a"))
    listed = env.run(None, args=["db", "list", "--json", "--db", str(conf.db_path)])
    assert [a["address"] for a in listed.json["allocations"]] == ["10.0.0.2"]
