"""``--log``'s pieces (aeserve.transforms): the signed log, the moments that pick columns, the
column records it marks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import skew

from aeserve.errors import InputError
from aeserve.manifest import ColumnSpec, parse_table_layout, table_layout
from aeserve.transforms import ValueShape, parse_log, signed_exp, signed_log, with_log


def test_the_signed_log_is_log1p_for_amounts_odd_for_negatives_and_inverted_exactly():
    x = np.array([-1e6, -3.0, -0.5, 0.0, 0.5, 3.0, 1e6])
    np.testing.assert_allclose(signed_log(x[3:]), np.log1p(x[3:]))
    np.testing.assert_allclose(signed_log(-x), -signed_log(x))
    np.testing.assert_allclose(signed_exp(signed_log(x)), x, rtol=1e-12)


def test_shapes_merged_block_by_block_equal_one_pass_and_scipy():
    rng = np.random.default_rng(3)
    values = rng.lognormal(1.0, 1.2, 5003) + 2.0
    merged = ValueShape()
    for block in np.array_split(values, [1, 7, 2500, 2501]):  # uneven blocks, one of a single value
        merged.update(block)
    whole = ValueShape()
    whole.update(values)
    assert merged.count == whole.count == len(values)
    assert merged.skew == pytest.approx(whole.skew, rel=1e-9) == pytest.approx(skew(values), rel=1e-9)
    assert merged.m2 / merged.count == pytest.approx(values.var(), rel=1e-12)
    assert merged.low == values.min()


def test_auto_takes_non_negative_skewed_columns_only():
    rng = np.random.default_rng(0)
    cases = {"amount": rng.lognormal(0, 1, 2000), "normal": rng.normal(10, 1, 2000),
             "with a negative": np.r_[rng.lognormal(0, 1, 1999), -0.1]}
    shapes = {}
    for name, values in cases.items():
        shapes[name] = ValueShape()
        shapes[name].update(values)
    assert shapes["amount"].skew > 3 and abs(shapes["normal"].skew) < 0.2
    assert [n for n, s in shapes.items() if s.wants_log] == ["amount"]
    specs = [ColumnSpec(name) for name in cases] + [ColumnSpec("home", "categorical", ("own",))]
    marked = with_log(specs, "auto", shapes)
    assert [s.transform for s in marked] == ["log", None, None, None]
    assert table_layout(marked) == ("numeric:log", "numeric", "numeric", "categorical:2")
    assert [t for _, _, _, t in parse_table_layout(table_layout(marked))] == ["log", None, None, None]


def test_named_columns_must_be_numeric_columns_of_the_table():
    specs = [ColumnSpec("income"), ColumnSpec("home", "categorical", ("own",)), ColumnSpec("ok", "binary")]
    assert [s.transform for s in with_log(specs, "income")] == ["log", None, None]
    with pytest.raises(InputError, match="--log: no column.*'salary'"):
        with_log(specs, "income,salary")
    with pytest.raises(InputError, match="--log takes numeric columns: 'home' is categorical"):
        with_log(specs, ["home"])
    assert parse_log(None) == () and parse_log(" Auto ") == "auto" and parse_log("a, b") == ("a", "b")
    with pytest.raises(ValueError, match="bad column layout entry 'binary:log'"):
        parse_table_layout(["binary:log"])
