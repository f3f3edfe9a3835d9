"""One CNI call in a child process that SIGKILLs itself before or after a chosen file operation.

Kill point 2k is just before the call's k-th file operation (an os function below), 2k+1 just
after it; kill_at -1 kills nowhere and reports how many points the call passed.
"""

import json
import subprocess
import sys

OPERATIONS = ("open", "write", "pwrite", "fsync", "ftruncate", "lseek", "sendfile", "rename", "unlink", "close")

CHILD = r"""
import json, os, signal, sys
kill_at, operations = int(sys.argv[1]), sys.argv[4].split(",")
env, stdin = json.loads(sys.argv[2]), sys.argv[3].encode()
import dbm.gnu
# Imported before the count starts, so that points are the store's operations, not imports.
from ecs_ipam import allocator, bolt, cli, commands, config, disk, go_import, lock, ownership, result, store, upgrade
points = [0]
def point():
    if points[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    points[0] += 1
def instrument(name):
    real = getattr(os, name)
    def operation(*args, **kwargs):
        point()
        value = real(*args, **kwargs)
        point()
        return value
    setattr(os, name, operation)
for name in operations:
    instrument(name)
call = cli.respond(env, lambda: stdin, lambda line: None)
output, code = call.output, call.code
sys.stdout.write(json.dumps({"output": output, "code": code, "points": points[0]}))
"""


def run_child(env, doc, kill_at):
    """The finished child: SIGKILLed at kill_at, or (-1) its JSON report on stdout."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(kill_at), json.dumps(env), json.dumps(doc),
                           ",".join(OPERATIONS)], capture_output=True, timeout=60, cwd="/")
    assert b"Traceback" not in proc.stdout + proc.stderr, proc
    return proc
