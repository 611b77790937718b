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
