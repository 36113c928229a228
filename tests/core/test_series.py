"""Series into windows (``aeserve.series``): the windows by hand, the same windows however the
rows are cut into chunks, groups and gaps kept apart, rows out of time order named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aeserve.errors import InputError
from aeserve.manifest import WindowSpec
from aeserve.series import SeriesWindows, parse_duration, time_values


def _series(n: int, channels: int = 3, groups: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, channels)).astype(np.float32)
    group = rng.integers(0, groups, n)
    times = np.arange(n, dtype=np.float64)
    times[n // 2:] += 50.0  # one gap of 51 in every group's time
    return values, times, group


def _by_hand(values, times, group, size: int, max_gap: float | None):
    """Each row's window, built the slow way: the group's rows up to it, cut at gaps, last W."""
    windows, ends = [], []
    for end in range(len(values)):
        mine = np.flatnonzero(group[:end + 1] == group[end])
        if max_gap is not None:
            steps = np.diff(times[mine])
            breaks = np.flatnonzero(steps > max_gap)
            if breaks.size:
                mine = mine[breaks[-1] + 1:]
        if len(mine) >= size:
            windows.append(values[mine[-size:]].T.reshape(-1))  # channel-major
            ends.append(end)
    return np.array(windows, np.float32), np.array(ends)


def _pushed(values, times, group, size: int, max_gap, cuts) -> tuple[np.ndarray, np.ndarray]:
    cutter = SeriesWindows(size, values.shape[1], max_gap)
    parts, ends, start = [], [], 0
    for stop in [*cuts, len(values)]:
        found = cutter.push(values[start:stop], times[start:stop], group[start:stop])
        parts.append(found.values)
        ends.append(found.ends + start)
        start = stop
    return np.concatenate(parts), np.concatenate(ends)


def test_each_row_gets_the_window_of_its_group_up_to_it_never_across_a_gap():
    values, times, group = _series(400)
    expected, expected_ends = _by_hand(values, times, group, 7, max_gap=10.0)
    windows, ends = _pushed(values, times, group, 7, 10.0, [])
    assert np.array_equal(ends, expected_ends) and np.array_equal(windows, expected)
    # each group's first 6 rows end no window, nor the first 6 after each of its gaps
    without_gaps = _pushed(values, times, group, 7, None, [])[1]
    assert len(values) - len(without_gaps) == 3 * 6 and len(ends) < len(without_gaps)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=8), st.integers(1, 12))
def test_the_windows_do_not_depend_on_where_chunks_were_cut(cuts, size):
    values, times, group = _series(300, seed=size)
    whole = _pushed(values, times, group, size, 10.0, [])
    cut = _pushed(values, times, group, size, 10.0, sorted(set(cuts)))
    assert np.array_equal(whole[0], cut[0]) and np.array_equal(whole[1], cut[1])


def test_stride_keeps_every_strideth_window_of_a_run():
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    found = SeriesWindows(4, 2, stride=3).push(values)
    assert found.ends.tolist() == [3, 6, 9, 12, 15, 18]
    assert found.values[0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]  # channel 0's four rows, then channel 1's


def test_a_row_before_its_predecessor_in_time_is_named(tmp_path):
    cutter = SeriesWindows(3, 1)
    cutter.push(np.zeros((2, 1), np.float32), np.array([1.0, 2.0]), np.array(["a", "a"]), rows=np.array([1, 2]))
    with pytest.raises(InputError, match=r"sensors.csv: row 9, column 'ts': time 1.5 comes before 2, the previous "
                                         r"row of group 'a'"):
        cutter.push(np.zeros((1, 1), np.float32), np.array([1.5]), np.array(["a"]), rows=np.array([9]),
                    source="sensors.csv", time_name="ts")


def test_durations_and_times_read_as_seconds():
    assert [parse_duration(t) for t in ("90s", "5min", "1.5h", "1d", "250ms", "12")] == [90, 300, 5400, 86400, 0.25, 12]
    with pytest.raises(InputError, match="expected a positive number"):
        parse_duration("soon")
    stamps = np.array(["2024-01-01T00:00:00", "2024-01-01T00:01:30"], dtype="datetime64[s]")
    assert time_values(stamps, "ts", "f", np.arange(1, 3)).tolist() == [1704067200.0, 1704067290.0]
    with pytest.raises(InputError, match=r"f: row 2, column 'ts': missing time"):
        time_values(np.array([1.0, np.nan]), "ts", "f", np.arange(1, 3))


def test_the_window_names_its_cells_by_channel_and_lag():
    spec = WindowSpec(size=3, channels=("load", "temp"))
    assert spec.cells == ("load@t-2", "load@t-1", "load@t", "temp@t-2", "temp@t-1", "temp@t")
    assert spec.same_windows(WindowSpec(size=3, channels=("load", "temp"), stride=5))  # stride: training only
    assert not spec.same_windows(WindowSpec(size=4, channels=("load", "temp")))
