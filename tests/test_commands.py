"""ecs_ipam.commands through HANDLERS: a Request built from config.parse_config, over a store in a dict."""

import ipaddress

import pytest

from ecs_ipam import commands, config, ownership
from ecs_ipam.errors import CNIError
from ecs_ipam.store import DictTables, Store

V4 = {"ipv4-subnet": "10.0.0.0/24"}


class Sessions:
    """Request.session over one DictTables store: records how each session was opened; the problem
    commit_problem() reports, or the error opening raises, can be set."""

    def __init__(self):
        self.store = Store(DictTables())
        self.opened = []  # (subnets, writable, create) per session
        self.problem = None
        self.error = None

    def __call__(self, subnets, writable=True, create=True):
        self.opened.append(([str(s) for s in subnets], writable, create))
        return self

    def __enter__(self):
        if self.error is not None:
            raise self.error
        return self.store

    def __exit__(self, *exc):
        return False

    def commit_problem(self):
        return self.problem

    def held(self):
        return {str(a.address): (a.id, a.container, a.ifname) for a in self.store.allocations()}


@pytest.fixture
def sessions():
    return Sessions()


def call(sessions, command, ipam, container=None, ifname="eth0", warnings=None, **extra):
    """HANDLERS[command] of a Request as cli.respond builds it from the config doc."""
    doc = {"cniVersion": "1.1.0", "name": "n", "ipam": {"type": "ecs-ipam", **ipam}, **extra}
    parsed = config.parse_config(command, doc)
    caller = ownership.Caller(parsed.named.id, container, ifname)
    warn = warnings.append if warnings is not None else lambda line: pytest.fail(f"unexpected warning {line!r}")
    return commands.HANDLERS[command](commands.Request(command, parsed, caller, sessions, warn))


def error_of(sessions, command, ipam, **kwargs):
    with pytest.raises(CNIError) as caught:
        call(sessions, command, ipam, **kwargs)
    return caught.value


def addresses(result):
    return [ip["address"] for ip in result["ips"]]


# -- ADD --------------------------------------------------------------------------------------

def test_add_allocates_one_address_per_family_and_records_the_caller(sessions):
    result = call(sessions, "ADD", {**V4, "ipv6-subnet": "2001:db8::/64", "id": "task"}, container="c1")
    assert addresses(result) == ["10.0.0.2/24", "2001:db8::2/64"]
    assert sessions.held() == {"10.0.0.2": ("task", "c1", "eth0"), "2001:db8::2": ("task", "c1", "eth0")}
    assert sessions.opened == [(["10.0.0.0/24", "2001:db8::/64"], True, True)]


def test_a_retried_add_without_an_id_gets_the_address_it_holds(sessions):
    first = call(sessions, "ADD", V4, container="c1")
    again = call(sessions, "ADD", V4, container="c1")
    assert addresses(first) == addresses(again) == ["10.0.0.2/24"]
    assert sessions.held() == {"10.0.0.2": (None, "c1", "eth0")}
    # Another interface of the same container is another attachment: a second address.
    assert addresses(call(sessions, "ADD", V4, container="c1", ifname="eth1")) == ["10.0.0.3/24"]


def test_a_retried_add_with_a_static_address_it_does_not_hold_is_code_102(sessions):
    call(sessions, "ADD", V4, container="c1")
    error = error_of(sessions, "ADD", {**V4, "ipv4-address": "10.0.0.9/24"}, container="c1")
    assert error.code == 102 and "'c1' already holds 10.0.0.2" in error.msg and "10.0.0.9" in error.msg
    assert sessions.held() == {"10.0.0.2": (None, "c1", "eth0")}


def test_a_second_add_under_the_same_id_is_code_102_even_from_the_same_container(sessions):
    call(sessions, "ADD", {**V4, "id": "task"}, container="c1")
    error = error_of(sessions, "ADD", {**V4, "id": "task"}, container="c1")
    assert error.code == 102 and "'task' already holds 10.0.0.2" in error.msg
    assert list(sessions.held()) == ["10.0.0.2"]


# -- DEL --------------------------------------------------------------------------------------

def test_del_by_id_releases_what_the_id_holds_and_opens_no_new_store(sessions):
    call(sessions, "ADD", {**V4, "id": "task"}, container="c1")
    call(sessions, "ADD", {**V4, "id": "other"}, container="c1")
    assert call(sessions, "DEL", {**V4, "id": "task"}, container="c1") is None
    assert sessions.held() == {"10.0.0.3": ("other", "c1", "eth0")}
    assert sessions.opened[-1] == (["10.0.0.0/24"], True, False)  # create=False: no store, nothing to release


def test_del_without_an_id_spares_what_the_container_holds_under_ids_and_says_so(sessions):
    call(sessions, "ADD", {**V4, "id": "task-1"}, container="c1")
    call(sessions, "ADD", V4, container="c1", ifname="eth1")
    warnings = []
    assert call(sessions, "DEL", V4, container="c1", ifname=None, warnings=warnings) is None
    assert sessions.held() == {"10.0.0.2": ("task-1", "c1", "eth0")}  # the one without an id went
    assert warnings == ["ecs-ipam: warning: DEL without an id released none of the 1 address(es) container "
                        "'c1' holds under ids (10.0.0.2): a DEL must name the id that holds them"]


def test_del_of_an_invalid_config_still_releases_by_the_address_it_names(sessions):
    call(sessions, "ADD", {**V4, "ipv4-address": "10.0.0.7/24"}, container="c1")
    # ipv4-gateway outside the subnet makes the ipam section invalid; the address is still named.
    assert call(sessions, "DEL", {**V4, "ipv4-address": "10.0.0.7/24", "ipv4-gateway": "192.0.2.1"},
                container="c1") is None
    assert sessions.held() == {}


def test_del_that_names_nothing_is_code_7(sessions):
    error = error_of(sessions, "DEL", V4, container=None)
    assert error.code == 7 and error.msg == "DEL cannot tell what to release"
    # With an invalid ipam that names nothing either, the config's own error is the one reported.
    error = error_of(sessions, "DEL", {"ipv4-subnet": "10.0.0.0/33"}, container=None)
    assert error.code == 7 and "'10.0.0.0/33'" in error.msg
    assert sessions.opened == []


def test_a_released_address_is_the_cursor_so_the_next_add_passes_it(sessions):
    for n in range(3):
        call(sessions, "ADD", {**V4, "id": f"t{n}"})  # .2, .3, .4
    call(sessions, "DEL", {**V4, "id": "t0"})
    assert sessions.store.cursor(ipaddress.ip_network("10.0.0.0/24")) == ipaddress.ip_address("10.0.0.2")
    assert addresses(call(sessions, "ADD", {**V4, "id": "t3"})) == ["10.0.0.5/24"]


# -- CHECK, GC --------------------------------------------------------------------------------

def test_check_reads_only_and_fails_for_what_the_caller_does_not_hold(sessions):
    call(sessions, "ADD", {**V4, "id": "task"})
    assert call(sessions, "CHECK", {**V4, "id": "task"}) is None
    assert sessions.opened[-1] == (["10.0.0.0/24"], False, True)
    error = error_of(sessions, "CHECK", {**V4, "id": "nobody"})
    assert error.code == 103
    error = error_of(sessions, "CHECK", V4, container=None)
    assert error.code == 7 and "CHECK cannot tell" in error.msg


def test_gc_releases_what_containers_outside_the_live_list_hold(sessions):
    for container in ("live", "gone"):
        call(sessions, "ADD", V4, container=container)
    assert call(sessions, "GC", V4, **{"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}) is None
    assert sessions.held() == {"10.0.0.2": (None, "live", "eth0")}


# -- STATUS: what each failure becomes --------------------------------------------------------

def test_status_succeeds_reading_only(sessions):
    assert call(sessions, "STATUS", V4) is None
    assert sessions.opened == [(["10.0.0.0/24"], False, True)]


def test_status_of_an_exhausted_subnet_is_code_50(sessions):
    call(sessions, "ADD", {"ipv4-subnet": "10.0.0.0/30"})  # its one usable address
    error = error_of(sessions, "STATUS", {"ipv4-subnet": "10.0.0.0/30"})
    assert error.code == 50 and error.msg == "subnet 10.0.0.0/30 is exhausted"


def test_status_where_no_commit_could_succeed_is_code_50_with_the_reason(sessions):
    sessions.problem = "/data is on a read-only file system"
    error = error_of(sessions, "STATUS", V4)
    assert error.code == 50 and error.msg == "the store cannot take an ADD now: /data is on a read-only file system"


def test_status_of_an_unusable_store_is_code_50_and_a_busy_lock_stays_code_11(sessions):
    sessions.error = CNIError(5, "store /data/eni-ipam.db is damaged: x", "restore it")
    error = error_of(sessions, "STATUS", V4)
    assert (error.code, error.msg, error.details) == (
        50, "the store is unusable: store /data/eni-ipam.db is damaged: x", "restore it")
    sessions.error = CNIError(11, "timed out after 5s waiting for the lock on /data/eni-ipam.db.lock")
    error = error_of(sessions, "STATUS", V4)
    assert error.code == 11 and error.msg.startswith("timed out")


# -- VERSION, the table -----------------------------------------------------------------------

def test_handlers_serve_each_cni_command_and_version_needs_no_request():
    assert set(commands.HANDLERS) == {"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"}
    assert commands.CONFIGLESS == {"VERSION"}
    assert commands.HANDLERS["VERSION"](None) == {
        "cniVersion": "1.1.0", "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
