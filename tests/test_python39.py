"""The shipped code must run on Python 3.9 (Amazon Linux 2023's python3): no newer syntax in it.

That is the package and tools/launcher.py, the file's __main__, which runs on the host's
interpreter before anything else.
"""

import ast

import pytest

from conftest import ROOT

SHIPPED = sorted((ROOT / "ecs_ipam").glob("*.py")) + [ROOT / "tools" / "launcher.py"]


@pytest.mark.parametrize("source", SHIPPED, ids=lambda path: path.name)
def test_parses_as_python_3_9(source):
    ast.parse(source.read_text(), filename=str(source), feature_version=(3, 9))


def test_every_module_of_the_package_is_checked():
    packed = {path.name for path in (ROOT / "ecs_ipam").rglob("*.py")}
    assert packed == {path.name for path in SHIPPED if path.parent.name == "ecs_ipam"}
