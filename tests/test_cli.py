"""Unit tests of the process edge: respond() over a given environment and stdin, and durations."""

import json

import pytest

from ecs_ipam import cli, settings
from ecs_ipam.errors import CNIError


def call(environ, stdin=b""):
    warnings = []
    call = cli.respond(environ, lambda: stdin, warnings.append)
    return call.output, call.code, warnings


def test_add_then_version_shapes(tmp_path):
    config = {"cniVersion": "0.3.1", "name": "n", "ipam": {"ipv4-subnet": "10.0.0.0/24", "ipv4-gatway": "x"}}
    output, code, warnings = call({"CNI_COMMAND": "ADD", "IPAM_DB_PATH": str(tmp_path / "db")},
                                  json.dumps(config).encode())
    assert code == 0 and output["ips"] == [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert any("ipv4-gatway" in line for line in warnings)
    output, code, _ = call({"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0 and output["cniVersion"] == "1.1.0" and "0.1.0" in output["supportedVersions"]


def test_missing_and_unknown_commands_are_code_4():
    output, code, warnings = call({})
    assert (code, output["code"]) == (1, 4) and "CNI_COMMAND" in output["msg"] and warnings
    output, code, _ = call({"CNI_COMMAND": "add"})
    assert output["code"] == 4 and "'add'" in output["msg"]


def test_errors_carry_the_config_version_and_stdin_must_be_utf8(tmp_path):
    output, code, _ = call({"CNI_COMMAND": "ADD", "IPAM_DB_PATH": str(tmp_path / "db")},
                           b'{"cniVersion":"0.4.0","ipam":{}}')
    assert output["cniVersion"] == "0.4.0" and output["code"] == 7
    output, code, _ = call({"CNI_COMMAND": "ADD"}, b"\xff\xfe")
    assert output["code"] == 6
    output, code, _ = call({"CNI_COMMAND": "CHECK"}, b'{"cniVersion":"0.3.1","ipam":{}}')
    assert output["code"] == 1 and "CHECK" in output["msg"]


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
