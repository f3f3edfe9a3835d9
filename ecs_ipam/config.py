"""Parses the network config on stdin into validated, typed values (pure: no files, no environment)."""

import ipaddress
from collections import namedtuple

from ecs_ipam import jsontext
from ecs_ipam.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, CNIError, config_error
from ecs_ipam.settings import parse_duration, store_path
from ecs_ipam.cni_versions import DEFAULT, require_command_allowed, require_supported

# A route as the result reports it; gw is the family's gateway when the config gave none.
Route = namedtuple("Route", "dst gw")
# One address family of the ipam section: version is 4 or 6, static the configured address with
# its prefix (an ip_interface) or None.
Family = namedtuple("Family", "version subnet gateway static routes")
# The ipam section: id is None when absent or empty; families holds IPv4 first, then IPv6.
IPAM = namedtuple("IPAM", "id families")
# What a config names for a DEL to release: its id, its static addresses, its subnets.
Named = namedtuple("Named", "id addresses subnets")
# A CNI call's network config, parsed: nothing after this sees JSON. ipam is None only for a
# DEL whose ipam fails validation; invalid is then that error, and named what its valid fields
# still name. expected: prevResult's interfaces (CHECK; None without one). live: GC's attachments
# as {container: {ifname or None}}. store: (db-path, db-connection-timeout), None where absent.
Config = namedtuple("Config", "cni_version ipam invalid named expected live store")

MAX_ID_BYTES = 256
# The longest prefix that still leaves an address once the network address and the gateway
# (and, for IPv4, the broadcast address) are set aside.
LONGEST_SUBNET_PREFIX = {4: 30, 6: 126}
FIELDS = ("subnet", "address", "gateway", "routes")
# The store's path and lock timeout (ecs_ipam.settings says how they combine with the environment).
DB_PATH, DB_CONNECTION_TIMEOUT = "db-path", "db-connection-timeout"
# The ECS agent's IPAMConfig also writes cniVersion into the ipam section, and its netlib the
# connected subnet sizes meant for ecs-bridge: known, not typos.
KNOWN_IPAM_KEYS = frozenset(
    ["type", "id", "cniVersion", "connectedSubnetMaskSizeIPv4", "connectedSubnetMaskSizeIPv6",
     DB_PATH, DB_CONNECTION_TIMEOUT]
    + [f"ipv{version}-{field}" for version in (4, 6) for field in FIELDS]
)


def decode(text):
    """The config document: a JSON object, else code 6."""
    try:
        doc = jsontext.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep to decode
        raise CNIError(DECODE_FAILURE, "failed to decode network config: invalid JSON", str(err))
    if not isinstance(doc, dict):
        raise CNIError(DECODE_FAILURE, "failed to decode network config: expected a JSON object",
                       f"got {_show(doc)}")
    return doc


def cni_version_of(doc):
    """The config's cniVersion, checked; a missing or empty one means 0.1.0."""
    version = doc.get("cniVersion")
    if version is None or version == "":
        return DEFAULT
    if not isinstance(version, str):
        raise CNIError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"cniVersion must be a string, got {_show(version)}")
    return require_supported(version)


def parse_config(command, doc):
    """The Config of command's decoded config doc; raise the first CNI error it has (code 1 or 7)."""
    cni_version = cni_version_of(doc)
    require_command_allowed(command, cni_version)
    store = parse_store_keys(doc)
    try:
        ipam = parse_ipam(doc)
        invalid = None
        named = Named(ipam.id, tuple(f.static.ip for f in ipam.families if f.static is not None),
                      tuple(f.subnet for f in ipam.families))
    except CNIError as err:
        if command != "DEL":  # DEL still releases what the valid fields name
            raise
        ipam, invalid, named = None, err, parse_release_hints(doc)
    expected = parse_prev_result(doc) if command == "CHECK" else None
    live = None
    if command == "GC":
        live = {}
        for container, ifname in parse_attachments(doc):
            live.setdefault(container, set()).add(ifname or None)
    return Config(cni_version, ipam, invalid, named, expected, live, store)


def parse_ipam(doc):
    """The config's ipam section as an IPAM; raise code 7 naming the first invalid field."""
    section = doc.get("ipam")
    if not isinstance(section, dict):
        raise config_error("ipam must be an object" if section is not None else "ipam is missing",
                           f"got {_show(section)}" if section is not None else "")
    families = tuple(f for f in (_parse_family(section, 4), _parse_family(section, 6)) if f)
    if not families:
        raise config_error("ipam needs ipv4-subnet or ipv6-subnet (or both)")
    return IPAM(_parse_id(section.get("id")), families)


def parse_store_keys(doc):
    """(db-path, db-connection-timeout in seconds) of the ipam section, None where absent; code 7
    naming the field and value when one is invalid."""
    section = doc.get("ipam")
    if not isinstance(section, dict):
        return None, None
    return _parse_db_path(section.get(DB_PATH)), _parse_db_timeout(section.get(DB_CONNECTION_TIMEOUT))


def unknown_ipam_keys(doc):
    """Keys of the ipam section this plugin does not know (usually typos such as ipv4-gatway)."""
    section = doc.get("ipam")
    return [key for key in section if key not in KNOWN_IPAM_KEYS] if isinstance(section, dict) else []


def id_of(doc):
    """The config's id when it is valid, else None (for the call log of a call that may have failed)."""
    section = doc.get("ipam")
    try:
        return _parse_id(section.get("id")) if isinstance(section, dict) else None
    except CNIError:
        return None


def parse_release_hints(doc):
    """What a DEL can still identify in a config that fails validation: (id, addresses, subnets).

    Each field is read on its own and skipped when invalid, so that one bad field
    does not stop the release of what the others name.
    """
    section = doc.get("ipam")
    if not isinstance(section, dict):
        return Named(None, (), ())
    addresses, subnets = [], []
    for version in (4, 6):
        for field, parse, found in ((f"ipv{version}-address", _parse_interface, addresses),
                                    (f"ipv{version}-subnet", parse_subnet, subnets)):
            try:
                if section.get(field) is not None:
                    parsed = parse(field, section[field], version)
                    found.append(getattr(parsed, "ip", parsed))
            except CNIError:
                pass
    return Named(id_of(doc), tuple(addresses), tuple(subnets))


def parse_prev_result(doc):
    """The addresses of prevResult with their prefixes, as ip_interfaces (any result version);
    None when there is no prevResult."""
    prev = doc.get("prevResult")
    if prev is None:
        return None
    if not isinstance(prev, dict):
        raise config_error("prevResult must be an object", f"got {_show(prev)}")
    texts = []
    ips = prev.get("ips")
    if ips is not None:
        if not isinstance(ips, list) or not all(isinstance(entry, dict) for entry in ips):
            raise config_error("prevResult.ips must be a list of objects", f"got {_show(ips)}")
        texts += [("prevResult.ips[].address", entry.get("address")) for entry in ips]
    for key in ("ip4", "ip6"):
        entry = prev.get(key)
        if entry is not None:
            if not isinstance(entry, dict):
                raise config_error(f"prevResult.{key} must be an object", f"got {_show(entry)}")
            texts.append((f"prevResult.{key}.ip", entry.get("ip")))
    addresses = []
    for field, text in texts:
        if not isinstance(text, str):
            raise config_error(f"{field} must be a string", f"got {_show(text)}")
        try:
            addresses.append(ipaddress.ip_interface(text))
        except ValueError:
            raise config_error(f"{field} {text!r} is not an IP address with a prefix")
    return tuple(addresses)


def parse_attachments(doc):
    """GC's list of live attachments as a set of (containerID, ifname) pairs."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in doc:
            break
    else:
        raise config_error("GC needs cni.dev/valid-attachments in the config")
    attachments = doc[key]
    if not isinstance(attachments, list):
        raise config_error(f"{key} must be a list", f"got {_show(attachments)}")
    pairs = set()
    for entry in attachments:
        container = entry.get("containerID") if isinstance(entry, dict) else None
        ifname = entry.get("ifname", "") if isinstance(entry, dict) else None
        if not isinstance(container, str) or not isinstance(ifname, str):
            raise config_error(f"{key} entries must be objects with string containerID and ifname",
                               f"got {_show(entry)}")
        pairs.add((container, ifname))
    return frozenset(pairs)


def _parse_id(value):
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise config_error("id must be a string", f"got {_show(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise config_error("id is not valid Unicode text", f"got {value!r}")
    if size > MAX_ID_BYTES:
        raise config_error(f"id is {size} bytes long; the limit is {MAX_ID_BYTES}", f"got {value!r}")
    return value


def _parse_db_path(value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise config_error(f"{DB_PATH} must be a string", f"got {_show(value)}")
    if "\0" in value:
        raise config_error(f"{DB_PATH} {value!r} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise config_error(f"{DB_PATH} is not valid Unicode text", f"got {value!r}")
    return store_path(DB_PATH, value, absolute=True, code=INVALID_CONFIG)


def _parse_db_timeout(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise config_error(f"{DB_CONNECTION_TIMEOUT} must be a duration string or a number of seconds",
                           f'such as "5s" or 5; got {_show(value)}')
    if isinstance(value, str) and not value.strip():
        raise config_error(f"{DB_CONNECTION_TIMEOUT} {value!r} is not a duration",
                           'use Go duration syntax such as "5s", "300ms" or "1m30s", or a number of seconds')
    text, shown = (value, repr(value)) if isinstance(value, str) else (str(value), _show(value))
    return parse_duration(DB_CONNECTION_TIMEOUT, text, INVALID_CONFIG, shown)


def _parse_family(section, version):
    prefix = f"ipv{version}-"
    if section.get(prefix + "subnet") is None:
        stray = [prefix + field for field in FIELDS[1:] if section.get(prefix + field) is not None]
        if stray:
            raise config_error(f"{stray[0]} is set but {prefix}subnet is missing")
        return None
    subnet = parse_subnet(prefix + "subnet", section[prefix + "subnet"], version)

    gateway = subnet.network_address + 1
    if section.get(prefix + "gateway") is not None:
        field = prefix + "gateway"
        gateway = _parse_address(field, section[field], version)
        _require_host_of(field, gateway, subnet)

    address = None
    if section.get(prefix + "address") is not None:
        field = prefix + "address"
        address = _parse_interface(field, section[field], version)
        _require_host_of(field, address.ip, subnet)

    routes = tuple(Route(dst, gw or gateway)
                   for dst, gw in _parse_routes(prefix + "routes", section.get(prefix + "routes"), version))
    return Family(version, subnet, gateway, address, routes)


def parse_subnet(field, value, version):
    """An ipv4-subnet/ipv6-subnet value as an ip_network (host bits dropped); code 7 naming field and value."""
    subnet = _parse_ip(field, value, version, ipaddress.ip_network, "a CIDR block", strict=False)
    longest = LONGEST_SUBNET_PREFIX[version]
    if subnet.prefixlen > longest:
        raise config_error(
            f"{field} {value!r} is too small: a /{subnet.prefixlen} has no address left once the "
            f"network address and the gateway are set aside (the longest prefix is /{longest})")
    return subnet


def _parse_interface(field, value, version):
    if isinstance(value, str) and "/" not in value:
        raise config_error(f"{field} {value!r} needs a prefix length, like {_example(version)}")
    return _parse_ip(field, value, version, ipaddress.ip_interface, "an address with a prefix length")


def _parse_address(field, value, version):
    if isinstance(value, str) and "/" in value:
        raise config_error(f"{field} {value!r} must be a plain address, without a prefix length")
    return _parse_ip(field, value, version, ipaddress.ip_address, "an address")


def _parse_routes(field, value, version):
    if value is None:
        return []
    if not isinstance(value, list):
        raise config_error(f"{field} must be a list of routes", f"got {_show(value)}")
    routes = []
    for index, route in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(route, dict):
            raise config_error(f"{where} must be an object with dst and optional gw", f"got {_show(route)}")
        if route.get("dst") is None:
            raise config_error(f"{where}.dst is missing")
        dst = _parse_ip(where + ".dst", route["dst"], version, ipaddress.ip_network, "a CIDR block",
                        strict=False)
        gw = None
        if route.get("gw") is not None:
            gw = _parse_address(where + ".gw", route["gw"], version)
        routes.append((dst, gw))
    return routes


def _parse_ip(field, value, version, parse, what, **options):
    """Parse value with an ipaddress constructor, insisting on the field's family."""
    if not isinstance(value, str):
        raise config_error(f"{field} must be a string", f"got {_show(value)}")
    try:
        parsed = parse(value, **options)
    except ValueError:
        raise config_error(f"{field} {value!r} is not {what}")
    ip = parsed.network_address if hasattr(parsed, "network_address") else getattr(parsed, "ip", parsed)
    if parsed.version != version:
        raise config_error(f"{field} {value!r} is an IPv{parsed.version} value in an IPv{version} field")
    # An IPv6Interface keeps its scope to itself: its .ip has scope_id None.
    if version == 6 and (ip.ipv4_mapped is not None or ip.scope_id is not None
                         or getattr(parsed, "scope_id", None) is not None):
        raise config_error(f"{field} {value!r} is not a plain IPv6 value "
                           "(IPv4-mapped and scoped addresses are not allowed)")
    return parsed


def _require_host_of(field, ip, subnet):
    """ip must be a host address of subnet: inside it, not its network (nor IPv4 broadcast) address."""
    if ip not in subnet:
        raise config_error(f"{field} {str(ip)!r} is outside the subnet {subnet}")
    if ip == subnet.network_address:
        raise config_error(f"{field} {str(ip)!r} is the network address of {subnet}")
    if subnet.version == 4 and ip == subnet.broadcast_address:
        raise config_error(f"{field} {str(ip)!r} is the broadcast address of {subnet}")


def _example(version):
    return "10.0.0.2/24" if version == 4 else "2001:db8::2/64"


def _show(value):
    """value as JSON for a message; a value nested deeper than the encoder recurses is named, not shown."""
    try:
        return jsontext.dumps(value)
    except RecursionError:
        return f"a JSON {'array' if isinstance(value, list) else 'object'} nested too deeply to show"
