"""JSON text in and out for the plugin's hot path, without the cost of importing the json package.

A runtime starts the plugin afresh for every call, so start-up is the hot path. `import json`
loads json.decoder and json.encoder, and through them re and enum: about 4 ms of a 25 ms ADD.
The C accelerator they wrap, _json, needs none of that. This module drives it the way
json.decoder and json.encoder do, and falls back to the json package where _json is missing or
does not behave as expected (another Python implementation, a future change), so it can only
ever be slower, never wrong.
"""

_WHITESPACE = " \t\n\r"  # JSON's whitespace, exactly


class _DecoderSettings:
    """The attributes _json.make_scanner reads, set as json.JSONDecoder() sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    memo = {}


def _scanner_loads(text):
    """Decode one JSON document (ValueError when it is not one; RecursionError when too deep)."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except RecursionError:
        raise
    except Exception:
        # Not JSON. _json reports that through json.decoder, which must be loaded for it, so
        # let the json package decode the text once more and raise its precise error.
        return _json_package().loads(text)
    if text[end:].strip(_WHITESPACE):
        return _json_package().loads(text)  # raises "Extra data"
    return value


def _json_package():
    import json

    return json


def _plain_dumps(value):
    """Encode str, int, float, bool, None, and lists, tuples and str-keyed dicts of them, as json.dumps does."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain_dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        return "{" + ", ".join(_quote(k) + ": " + _plain_dumps(v) for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} is not encoded by ecs_ipam.jsontext")


try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner

    _scan = make_scanner(_DecoderSettings())
    _PROBE = '{"a": [1, null, true, "\\u00e9\\n"], "b": {}}'
    if _scanner_loads(" " + _PROBE + "\n") != {"a": [1, None, True, "\u00e9\n"], "b": {}}:
        raise ImportError("_json decoded the probe differently")
    if _plain_dumps({"a": [1, None, True, "\u00e9\n"], "b": {}}) != _PROBE:
        raise ImportError("_json encoded the probe differently")
    loads, dumps = _scanner_loads, _plain_dumps
except Exception:  # any surprise: the json package, slower and certainly right
    import json

    loads, dumps = json.loads, json.dumps
