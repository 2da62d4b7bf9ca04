"""Page-table formats with roots smaller and larger than one page, as an outside plugin
file (tests/test_geometry.py): ``wide-root`` (4 levels, a 2048-entry root of four
concatenated 4K tables: 50-bit addresses) and ``small-root`` (3 levels, a 4-entry root as
x86 PAE's page-directory-pointer table: 32-bit addresses)."""
from slatframe import hookimpl
from slatframe.paging import PageTableFormat
from slatframe.records import PageTableFormatRecord

P, RW, A, D = 1, 2, 1 << 5, 1 << 6


def wide(options) -> PageTableFormat:
    return PageTableFormat(name="wide-root", levels=4, index_bits=(9, 9, 9, 11), leaf_levels=(1, 2, 3),
                           present_mask=P, write_flag=RW, accessed_flag=A, dirty_flag=D, table_bits=P, leaf_bits=P)


def small(options) -> PageTableFormat:
    return PageTableFormat(name="small-root", levels=3, index_bits=(9, 9, 2), leaf_levels=(1, 2),
                           present_mask=P, write_flag=RW, accessed_flag=A, dirty_flag=D, table_bits=P, leaf_bits=P)


@hookimpl
def slatframe_page_table_formats():
    return [PageTableFormatRecord(name="wide-root", summary="a root of four concatenated tables", factory=wide),
            PageTableFormatRecord(name="small-root", summary="a four-entry root", factory=small)]
