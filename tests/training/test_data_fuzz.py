"""The upload checks, fuzzed (hypothesis, bounded in examples and time): whatever the bytes,
only a DataError comes out, and reading holds memory to what the limits allow."""

import contextlib
import gzip
import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.data import DataError, Limits, check_upload

LIMITS = Limits(max_decompressed_bytes=200_000, max_line_chars=2_000)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
SQUADISH = st.builds(
    lambda paras: {"data": [{"paragraphs": paras}]},
    st.lists(
        st.fixed_dictionaries(
            {"context": st.text(max_size=80), "qas": st.lists(JSONISH | st.fixed_dictionaries(
                {"id": st.text(max_size=5), "question": st.text(max_size=20),
                 "answers": st.lists(st.fixed_dictionaries({"text": st.text(max_size=5), "answer_start": st.integers(-5, 90)}), max_size=2)}
            ), max_size=3)}
        ),
        max_size=4,
    ),
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _tracing():
    """Memory traced once for the module. Started and stopped for every example (500 times),
    tracemalloc raced the native threads of the session's Ray, which allocate without the
    GIL, and crashed the test process once (a race in CPython 3.11's tracemalloc)."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


@contextlib.contextmanager
def _growth():
    """The peak of traced memory above where it stood on entry, in bytes (set on exit)."""
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    out = {"bytes": 0}
    try:
        yield out
    finally:
        out["bytes"] = tracemalloc.get_traced_memory()[1] - base


def _content(draw_bytes: bytes, kind: int, doc, lines) -> bytes:
    if kind == 0:
        return draw_bytes
    if kind == 1:
        return json.dumps(doc).encode()
    text = "\n".join(json.dumps(x) for x in lines).encode()
    return gzip.compress(text) if kind == 3 else text


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=3000),
    kind=st.integers(0, 3),
    doc=SQUADISH,
    lines=st.lists(JSONISH, max_size=20),
    purpose=st.sampled_from(["fine-tune", "pretrain"]),
)
def test_only_a_data_error_comes_out_and_memory_stays_bounded(
    tmp_path_factory, raw, kind, doc, lines, purpose
):
    path = tmp_path_factory.mktemp("fuzz") / "upload"
    path.write_bytes(_content(raw, kind, doc, lines))
    with _growth() as held:
        try:
            fmt, rows, _ = check_upload(path, purpose, LIMITS)
            assert fmt in ("classification", "squad", "corpus") and rows > 0
        except DataError as exc:
            assert str(exc) and exc.problems
    assert held["bytes"] < 8 * 2**20, held


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(300_000, 3_000_000), line=st.booleans())
def test_an_input_past_its_limits_is_refused_without_being_held(tmp_path_factory, size, line):
    """Far past the limits (a long line, a large gzip): refused, memory held to the limits."""
    path = tmp_path_factory.mktemp("big") / "upload.gz"
    body = b"x" * size if line else b"word\n" * (size // 5)
    path.write_bytes(gzip.compress(body))
    with _growth() as held:
        try:
            check_upload(path, "pretrain", LIMITS)
            raise AssertionError("accepted past its limits")
        except DataError as exc:
            assert "limit" in str(exc)
    assert held["bytes"] < 8 * 2**20, held
