"""The process edge: environment, argv and stdin in; CNI JSON on stdout and an exit code out."""

import sys


def main():
    sys.stdout.write('{"cniVersion":"1.1.0","code":4,"msg":"not implemented yet"}\n')
    sys.exit(1)
