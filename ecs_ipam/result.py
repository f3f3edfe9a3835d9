"""The result of an ADD, and its JSON shape for each CNI version."""

from collections import namedtuple

from ecs_ipam.cni_versions import LEGACY_VERSIONS, VERSIONED_IPS

# interface: the address with its prefix length (an ip_interface); gateway an ip_address.
IPConfig = namedtuple("IPConfig", "interface gateway")
# ips holds IPv4 first, then IPv6; routes likewise (config.Route values).
Result = namedtuple("Result", "ips routes")


def encode(result, cni_version):
    """The result as the JSON object a runtime of cni_version expects (IPAM: no interfaces)."""
    if cni_version in LEGACY_VERSIONS:
        encoded = {"cniVersion": cni_version}
        for ip in result.ips:
            version = ip.interface.version
            entry = {"ip": str(ip.interface), "gateway": str(ip.gateway)}
            routes = [_route(route) for route in result.routes if route.dst.version == version]
            if routes:
                entry["routes"] = routes
            encoded[f"ip{version}"] = entry
        encoded["dns"] = {}
        return encoded

    ips = []
    for ip in result.ips:
        entry = {"address": str(ip.interface), "gateway": str(ip.gateway)}
        if cni_version in VERSIONED_IPS:
            entry = {"version": str(ip.interface.version), **entry}
        ips.append(entry)
    encoded = {"cniVersion": cni_version, "ips": ips}
    if result.routes:
        encoded["routes"] = [_route(route) for route in result.routes]
    encoded["dns"] = {}
    return encoded


def _route(route):
    return {"dst": str(route.dst), "gw": str(route.gw)}
