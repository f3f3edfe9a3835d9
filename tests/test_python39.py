"""The package must run on Python 3.9 (Amazon Linux 2023's python3): no newer syntax anywhere."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ecs_ipam"
SOURCES = sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_parses_as_python_3_9(source):
    ast.parse(source.read_text(), filename=str(source), feature_version=(3, 9))


def test_parser_rejects_newer_syntax():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 9))


def test_there_are_sources():
    assert len(SOURCES) >= 8
