"""The CNI specification versions this plugin speaks, and which commands each allows."""

from ecs_ipam.errors import INCOMPATIBLE_VERSION, CNIError

SUPPORTED = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
NEWEST = SUPPORTED[-1]
# A config without cniVersion is a 0.1.0 config (spec rule).
DEFAULT = "0.1.0"
# The result's shape: versions with ip4/ip6 objects, and those whose ips entries carry "version".
LEGACY_VERSIONS = ("0.1.0", "0.2.0")
VERSIONED_IPS = ("0.3.0", "0.3.1", "0.4.0")

# The first version that allows each command; ADD, DEL and VERSION exist in all.
FIRST_VERSION_OF = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def at_least(version, minimum):
    return SUPPORTED.index(version) >= SUPPORTED.index(minimum)


def require_supported(version):
    """Return version if this plugin speaks it, else raise code 1 naming it."""
    if version not in SUPPORTED:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(SUPPORTED)}",
        )
    return version


def require_command_allowed(command, version):
    minimum = FIRST_VERSION_OF.get(command)
    if minimum and not at_least(version, minimum):
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"config version does not allow {command}",
            f"{command} needs cniVersion {minimum} or newer, config is {version!r}",
        )
