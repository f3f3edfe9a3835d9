"""The one exception type of the plugin: a CNI error with its code, message and details."""

# Codes from the CNI specification.
INCOMPATIBLE_VERSION = 1
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50

# Codes of this plugin (CNI leaves 100 and up to plugins).
ADDRESS_IN_USE = 100
SUBNET_EXHAUSTED = 101
DUPLICATE_ID = 102
CHECK_MISMATCH = 103
INTERNAL_ERROR = 999


class CNIError(Exception):
    """A failure the plugin reports to the runtime as a CNI error object."""

    def __init__(self, code, msg, details=""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version):
        error = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            error["details"] = self.details
        return error


def config_error(msg, details=""):
    return CNIError(INVALID_CONFIG, msg, details)
