"""Property tests (hypothesis) of the parts that take users' input apart: strict JSON,
descriptor validation of job inputs, command templating, and file names and URIs."""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from everest_app import strict_json
from everest_app.descriptor import from_dict, validate_inputs
from everest_app.errors import BadRequestError
from everest_local.files import canonical_uri
from everest_local.staging import build_argv, safe_name

FAST = settings(max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@FAST
@given(st.binary() | st.text())
def test_strict_json_refuses_with_its_own_error_or_parses(data) -> None:
    try:
        value = strict_json.loads(data)
    except strict_json.JSONInputError as exc:
        assert str(exc)
        return
    strict_json.check(value)  # what it let through is storable


@FAST
@given(json_values)
def test_strict_json_round_trips_what_json_can_hold(value) -> None:
    assert strict_json.loads(strict_json.dumps(value)) == value


@FAST
@given(st.recursive(st.floats() | st.integers(), lambda inner: st.lists(inner, max_size=3)))
def test_strict_json_out_is_always_valid_json(value) -> None:
    text = strict_json.dumps(value)
    assert "NaN" not in text and "Infinity" not in text
    strict_json.loads(text, max_depth=10**6)


APP = from_dict({
    "alias": "typed", "name": "Typed",
    "inputs": {"n": {"type": "integer", "minimum": 0, "maximum": 10},
               "x": {"type": "number", "required": True},
               "s": {"type": "string"},
               "b": {"type": "boolean"},
               "choice": {"type": "enum", "enum": ["a", "b"]},
               "many": {"type": "array", "items": {"type": "number"}},
               "f": {"type": "string", "format": "uri"}},
    "outputs": {}, "config": {"command": "true"}})


@FAST
@given(st.dictionaries(st.sampled_from(["n", "x", "s", "b", "choice", "many", "f", "other"]),
                       json_values, max_size=8) | json_values)
def test_input_validation_answers_a_400_or_checked_values(inputs) -> None:
    try:
        out = validate_inputs(APP, inputs)
    except BadRequestError as exc:
        assert exc.status == 400 and exc.message
        return
    assert isinstance(out["x"], int | float) and math.isfinite(out["x"])
    if "n" in out:
        assert isinstance(out["n"], int) and 0 <= out["n"] <= 10
    if "choice" in out:
        assert out["choice"] in ("a", "b")
    strict_json.check(out)


texts = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",)))


@FAST
@given(texts, texts)
def test_templating_never_splits_or_reinterprets_a_value(a: str, b: str) -> None:
    argv = build_argv("prog --name=${a} ${b} literal", {"a": a, "b": b})
    expected = ["prog", f"--name={a}", *([b] if b else []), "literal"]
    assert argv == expected  # one argument per value, whatever its spaces, quotes, $ or ;


@FAST
@given(st.lists(texts.filter(bool), max_size=5))
def test_an_array_placeholder_gives_one_argument_per_item(items: list[str]) -> None:
    assert build_argv("prog ${xs}", {"xs": items}) == ["prog", *items]


@FAST
@given(st.text())
def test_a_safe_name_stays_in_its_folder(name: str) -> None:
    clean = safe_name(name)
    if clean is None:
        return
    assert "/" not in clean and clean not in (".", "..") and "\x00" not in clean
    work = PurePosixPath("/work")
    assert (work / clean).parent == work


@FAST
@given(st.text())
def test_file_uris_have_one_canonical_form(tail: str) -> None:
    uri = canonical_uri("/api/files/" + tail)
    assert uri is not None and uri.startswith("/api/files/")
    assert canonical_uri(uri) == uri  # idempotent: equal spellings compare equal
