"""Unit tests of the call log: its lines, its levels, where it goes, and its rotation (in-process)."""

import calendar
import ipaddress

import pytest

from ecs_ipam import calllog, settings
from ecs_ipam.cli import Call
from ecs_ipam.errors import CNIError
from ecs_ipam.store import Allocation

NOW = calendar.timegm((2026, 11, 30, 10, 13, 20))
EARLIER = NOW - 3600  # 2026-11-30T09:13:20Z
SUBNET = ipaddress.ip_network("169.254.172.0/22")
V6 = ipaddress.ip_network("fd00:ec2::/64")


def held(address, holder="0a:1b:2c:3d:4e:5f", container="f" * 64, ifname="ecs-eth0", since=EARLIER):
    return Allocation(ipaddress.ip_address(address), holder, container, ifname,
                      SUBNET if "." in address else V6, since)


def call(command="ADD", changes=(), error=None, holder="0a:1b:2c:3d:4e:5f", container="f" * 64, ifname="ecs-eth0"):
    return Call(None, 1 if error else 0, command, holder, container, ifname, list(changes), error, [])


def test_an_add_names_the_caller_and_what_it_allocated():
    line = calllog.line(call(changes=[("allocated", held("169.254.172.2", since=NOW)),
                                      ("allocated", held("fd00:ec2::2", since=NOW))]), "info", NOW)
    assert line == (f'2026-11-30T10:13:20Z [INFO] ADD id="0a:1b:2c:3d:4e:5f" container="{"f" * 64}" '
                    'ifname="ecs-eth0": allocated 169.254.172.2, fd00:ec2::2\n')


def test_a_release_names_each_holder_and_since_when():
    changes = [("released", held("169.254.172.2", holder="/var/run/netns/task-a", container="container-id")),
               ("released", held("fd00:ec2::2", holder="/var/run/netns/task-a", container="container-id")),
               ("released", held("169.254.172.3", holder=None, container="c2", ifname=None, since=NOW - 60))]
    line = calllog.line(call("GC", changes, holder=None, container=None, ifname=None), "info", NOW)
    assert line == ('2026-11-30T10:13:20Z [INFO] GC id=- container=- ifname=-: released '
                    '169.254.172.2, fd00:ec2::2 (id="/var/run/netns/task-a" container="container-id" '
                    'ifname="ecs-eth0" since 2026-11-30T09:13:20Z), '
                    '169.254.172.3 (id=- container="c2" ifname=- since 2026-11-30T10:12:20Z)\n')


def test_an_error_is_logged_with_its_code_message_and_details_and_what_was_committed_anyway():
    error = CNIError(5, "GC released what it could, but 1 allocation(s) are damaged", "'a/10.0.0.9' holds\njunk")
    line = calllog.line(call("GC", [("released", held("169.254.172.2"))], error), "info", NOW)
    assert line.startswith('2026-11-30T10:13:20Z [ERROR] GC id="0a:1b:2c:3d:4e:5f" ')
    assert line.endswith(": code 5: GC released what it could, but 1 allocation(s) are damaged: "
                         "'a/10.0.0.9' holds\\njunk; released 169.254.172.2 (id=\"0a:1b:2c:3d:4e:5f\" "
                         f"container=\"{'f' * 64}\" ifname=\"ecs-eth0\" since 2026-11-30T09:13:20Z)\n")


def test_any_id_command_or_container_stays_on_one_line():
    odd = call("ADD\nX", [("allocated", held("169.254.172.2"))], holder='a"b\nc\u00e9', container="c\udcff",
               ifname=None)
    line = calllog.line(odd, "info", NOW)
    assert line.count("\n") == 1 and line.isascii()
    assert '"ADD\\nX" id="a\\"b\\nc\\u00e9" container="c\\udcff" ifname=-' in line


def test_a_call_that_changed_nothing_and_did_not_fail_has_no_line():
    assert calllog.line(call("CHECK"), "trace", NOW) is None


@pytest.mark.parametrize("level, logged", [("trace", {"info", "error"}), ("debug", {"info", "error"}),
                                           ("info", {"info", "error"}), ("warn", {"error"}),
                                           ("error", {"error"}), ("critical", set())])
def test_levels(level, logged):
    change = call(changes=[("allocated", held("169.254.172.2"))])
    failure = call(error=CNIError(101, "subnet 169.254.172.0/22 is exhausted"))
    assert {name for name, c in (("info", change), ("error", failure)) if calllog.line(c, level, NOW)} == logged


@pytest.mark.parametrize("value, level", [(None, "info"), ("", "info"), ("WARN", "warn"), (" error ", "error"),
                                          ("verbose", "info"), ("off", "off"), ("Off", "off")])
def test_log_settings_level(tmp_path, value, level):
    environ = {"ECS_CNI_LOG_FILE": str(tmp_path / "x.log")}
    if value is not None:
        environ["ECS_CNI_LOGLEVEL"] = value
    path, got = settings.log_settings(environ)
    assert got == level
    assert path == (None if level == "off" else str(tmp_path / "x.log"))


def test_log_settings_default_file_only_where_its_directory_exists(tmp_path):
    default = tmp_path / "log" / "ecs-cni-ipam-plugin.log"
    assert settings.log_settings({}, str(default)) == (None, "info")
    assert settings.log_settings({"ECS_CNI_LOG_FILE": ""}, str(default)) == (None, "info")
    (tmp_path / "log").mkdir()
    assert settings.log_settings({}, str(default)) == (str(default), "info")
    assert settings.log_settings({"ECS_CNI_LOG_FILE": "/elsewhere.log"}, str(default)) == ("/elsewhere.log", "info")
    assert not default.exists()
    assert settings.DEFAULT_LOG_FILE == "/log/ecs-cni-ipam-plugin.log"  # the Go plugin's


def test_append_rotates_before_a_line_would_pass_the_limit_and_keeps_four_generations(tmp_path, monkeypatch):
    monkeypatch.setattr(calllog, "MAX_BYTES", 100)
    log = tmp_path / "calls.log"
    lines = [f"line {n:02d} {'x' * 30}\n" for n in range(20)]  # 40 bytes: two fit in 100, a third does not
    for text in lines:
        calllog.append(str(log), text)
    assert log.read_text() == "".join(lines[18:])
    assert [(tmp_path / f"calls.log.{n}").read_text() for n in (1, 2, 3, 4)] == \
        ["".join(lines[i:i + 2]) for i in (16, 14, 12, 10)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.log"] + [f"calls.log.{n}" for n in (1, 2, 3, 4)]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_append_never_rotates_an_empty_log_for_an_overlong_line(tmp_path, monkeypatch):
    monkeypatch.setattr(calllog, "MAX_BYTES", 10)
    log = tmp_path / "calls.log"
    calllog.append(str(log), "a line longer than the limit\n")
    assert log.read_text() == "a line longer than the limit\n" and not (tmp_path / "calls.log.1").exists()
