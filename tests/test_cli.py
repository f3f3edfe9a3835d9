"""Unit tests of the process edge: respond() over a given environment and stdin."""

import json

from ecs_ipam import cli


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
