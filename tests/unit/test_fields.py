"""Request validation helpers: what each accepts, and the field a refusal names."""

from __future__ import annotations

import pytest

from server.domain.errors import InvalidArgument
from server.services.fields import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Fields


@pytest.mark.parametrize(("value", "size"), [(0, DEFAULT_PAGE_SIZE), (1, 1), (37, 37), (MAX_PAGE_SIZE, MAX_PAGE_SIZE)])
def test_a_page_size_in_bounds_is_kept_and_zero_means_the_default(value, size):
    f = Fields()
    assert f.page_size(value) == size
    f.done()
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (20, 100)


@pytest.mark.parametrize("value", [-1, MAX_PAGE_SIZE + 1, 2**31 - 1])
def test_a_page_size_out_of_bounds_is_refused_with_the_name_of_its_field(value):
    f = Fields()
    f.page_size(value, "cases.page_size")
    with pytest.raises(InvalidArgument) as error:
        f.done()
    assert [v.field for v in error.value.violations] == ["cases.page_size"]
    assert "between 1 and 100" in error.value.violations[0].description


def test_a_day_is_optional_and_only_ever_yyyy_mm_dd():
    from datetime import date

    f = Fields()
    assert f.day("", "as_of_date") is None
    assert f.day("2027-02-28", "as_of_date") == date(2027, 2, 28)
    for bad in ("2027-02-29", "20270228", "2027-2-28", "2027-02-28T00:00", "yesterday"):
        assert f.day(bad, "as_of_date") is None
    assert [v.field for v in f.violations] == ["as_of_date"] * 5
    with pytest.raises(InvalidArgument, match="must be a date YYYY-MM-DD"):
        f.done()
