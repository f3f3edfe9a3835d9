"""Unit tests of jsontext: the same text and values as the json package, without its import cost."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from ecs_ipam import jsontext


DOCUMENTS = [
    '{"cniVersion": "1.0.0", "ipam": {"id": "t\\u00e9\\n\\"x\\"", "ipv4-routes": [{"dst": "1.2.3.4/32", "gw": null}]}}',
    '  [1, -2, 3.5, 1e3, true, false, null, "", {}, []]\n',
    '"\\ud83d\\ude00 and \\u2028"', "0", "-0.0", '{"a": {"a": {"a": [[[]]]}}}', '{"dup": 1, "dup": 2}',
    '18446744073709551616', 'NaN', '[Infinity, -Infinity]',
]


def test_the_fast_path_is_in_use():
    assert jsontext.loads is jsontext._scanner_loads and jsontext.dumps is jsontext._plain_dumps


@pytest.mark.parametrize("text", DOCUMENTS)
def test_loads_agrees_with_json(text):
    assert repr(jsontext.loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", " ", "{", '{"a": 1} x', "[1,]", "{'a': 1}", '"\\x"', "tru", '{"a" 1}',
                                  '"line\nbreak"'])
def test_loads_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_refusal_works_before_json_is_imported():
    """_json raises its errors through json.decoder; without it loaded, the error path must still work."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from ecs_ipam import jsontext\n"
              "assert 'json' not in sys.modules\n"
              "for text in ('{', '[1,]', '{\"a\": 1} x', ''):\n"
              "    try:\n"
              "        jsontext.loads(text)\n"
              "    except ValueError:\n"
              "        continue\n"
              "    raise SystemExit('accepted ' + repr(text))\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_too_deep_is_a_recursion_error_as_in_json():
    with pytest.raises(RecursionError):
        jsontext.loads("[" * 100000 + "]" * 100000)


@pytest.mark.parametrize("value", [
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "dns": {}},
    ["é", "\n\t\"\\", "\u2028", "\U0001f600", 0, -5, 2 ** 70, True, False, None, 1.5, float("inf")],
    ("a", ("b",)), {}, [], "",
])
def test_dumps_agrees_with_json(value):
    assert jsontext.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", [{1: "a"}, {"a": object()}, b"bytes", {"s": {1, 2}}])
def test_dumps_refuses_what_it_cannot_encode(value):
    with pytest.raises(TypeError):
        jsontext.dumps(value)


def test_an_add_imports_neither_json_nor_re(tmp_path):
    """The point of jsontext: the ADD path must not pull in json (and with it re and enum)."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from ecs_ipam import cli\n"
        "call = cli.respond({'CNI_COMMAND': 'ADD', 'IPAM_DB_PATH': sys.argv[2],"
        " 'IPAM_DB_CONNECTION_TIMEOUT': '1m30s'},"
        " lambda: b'{\"cniVersion\": \"1.0.0\", \"ipam\": {\"ipv4-subnet\": \"10.0.0.0/24\"}}', print)\n"
        "assert call.code == 0, call\n"
        "print(sorted(m for m in ('json', 're', 'enum', 'dataclasses', 'typing') if m in sys.modules))\n"
    )
    db = tmp_path / "ipam.db"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(ROOT), str(db)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
