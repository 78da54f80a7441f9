"""Shared by the model-file tests: one saved file of each kind, made once per module."""

import pytest

import fastnn


def save_each(tmp_path_factory, kinds, make) -> dict:
    """kind -> the bytes of ``fastnn.save(make(kind))``; kinds whose ``make`` skips
    (an optional dependency missing) are left out."""
    d = tmp_path_factory.mktemp("valid")
    out = {}
    for kind in kinds:
        try:
            obj = make(kind)
        except pytest.skip.Exception:
            continue
        fastnn.save(obj, d / kind)
        out[kind] = (d / kind).read_bytes()
    return out
