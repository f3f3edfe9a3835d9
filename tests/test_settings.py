"""ecs_ipam.settings: Go durations, where the store is and how long to wait for it, where the call log goes."""

import pytest

from ecs_ipam import settings
from ecs_ipam.errors import CNIError


@pytest.mark.parametrize("text, seconds", [
    (None, 5.0), ("", 5.0), ("5s", 5.0), ("300ms", 0.3), ("1m30s", 90.0), ("1.5h", 5400.0),
    ("2", 2.0), ("0", 0.0), ("0.25", 0.25), ("100us", 0.0001), ("1h2m3s4ms", 3723.004),
])
def test_go_durations(text, seconds):
    assert settings.parse_duration("T", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5x", "s", "-1s", "-3", "1s 2s", "nan", "inf", "5 s",
                                  "1e300", "2562048h", "9999999999999h",  # beyond Go's int64 nanoseconds
                                  "1_0", "1_0s"])  # Python's float() takes underscores; Go does not
def test_bad_durations_are_code_4_naming_the_value(text):
    with pytest.raises(CNIError) as caught:
        settings.parse_duration("IPAM_DB_CONNECTION_TIMEOUT", text)
    assert caught.value.code == 4 and "IPAM_DB_CONNECTION_TIMEOUT" in caught.value.msg and repr(text) in caught.value.msg


@pytest.mark.parametrize("configured, environ, expected", [
    ((None, None), {}, (settings.DEFAULT_PATH, 5.0)),
    ((None, None), {"IPAM_DB_PATH": "/env.db", "IPAM_DB_CONNECTION_TIMEOUT": "2s"}, ("/env.db", 2.0)),
    (("/conf.db", 0.5), {"IPAM_DB_PATH": "/env.db", "IPAM_DB_CONNECTION_TIMEOUT": "2s"}, ("/conf.db", 0.5)),
    (("/conf.db", None), {"IPAM_DB_PATH": "/env.db", "IPAM_DB_CONNECTION_TIMEOUT": "2s"}, ("/conf.db", 2.0)),
    ((None, 0.0), {"IPAM_DB_PATH": "/env.db", "IPAM_DB_CONNECTION_TIMEOUT": "2s"}, ("/env.db", 0.0)),
    # The config's timeout wins, so a bad one in the environment is never read.
    ((None, 1.0), {"IPAM_DB_CONNECTION_TIMEOUT": "banana"}, (settings.DEFAULT_PATH, 1.0)),
])
def test_the_config_wins_over_the_environment_over_the_default(configured, environ, expected):
    assert settings.store_settings(environ, configured) == expected


def test_the_db_tools_path_wins_over_the_environment():
    assert settings.store_settings({"IPAM_DB_PATH": "/env.db"}, path="/tool.db") == ("/tool.db", 5.0)


@pytest.mark.parametrize("name, value, fragment", [
    ("IPAM_DB_PATH", "/data/", "names a directory"), ("IPAM_DB_PATH", "/data/.", "names a directory"),
    ("IPAM_DB_PATH", "/data/..", "names a directory"), ("IPAM_DB_PATH", "data/eni-ipam.db", "is a relative path"),
])
def test_a_store_path_that_cannot_be_the_stores_file_is_code_4_naming_it(name, value, fragment):
    with pytest.raises(CNIError) as caught:
        settings.store_settings({name: value})
    assert caught.value.code == 4 and f"{name} {value!r} {fragment}" == caught.value.msg


def test_an_empty_ipam_db_path_is_unset_and_a_relative_db_flag_is_from_the_working_directory(tmp_path, monkeypatch):
    assert settings.store_settings({"IPAM_DB_PATH": ""}) == ("/data/eni-ipam.db", 5.0)
    monkeypatch.chdir(tmp_path)
    assert settings.store_settings({}, path="here.db") == (str(tmp_path / "here.db"), 5.0)


@pytest.mark.parametrize("environ, expected", [
    ({}, (None, "info")),  # the default file's directory does not exist: no log
    ({"ECS_CNI_LOG_FILE": "/x/calls.log"}, ("/x/calls.log", "info")),
    ({"ECS_CNI_LOG_FILE": "/x/calls.log", "ECS_CNI_LOGLEVEL": " Debug "}, ("/x/calls.log", "debug")),
    ({"ECS_CNI_LOG_FILE": "/x/calls.log", "ECS_CNI_LOGLEVEL": "loud"}, ("/x/calls.log", "info")),
    ({"ECS_CNI_LOG_FILE": "/x/calls.log", "ECS_CNI_LOGLEVEL": "off"}, (None, "off")),
])
def test_the_call_logs_file_and_level(environ, expected, tmp_path):
    assert settings.log_settings(environ, default_file=str(tmp_path / "missing" / "x.log")) == expected


def test_the_default_call_log_is_used_only_where_its_directory_exists(tmp_path):
    default = str(tmp_path / "ecs-cni-ipam-plugin.log")
    assert settings.log_settings({}, default_file=default) == (default, "info")
    assert not (tmp_path / "ecs-cni-ipam-plugin.log").exists()  # deciding makes nothing
