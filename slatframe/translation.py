"""What translators return: translations (cached by TLBs) and TLB invalidations."""
from __future__ import annotations

from typing import NamedTuple


class Translation(NamedTuple):
    """What a walk returns and a TLB entry caches: the host page holding the address."""

    page: int  #: hPA of the base of the (TLB-entry-sized) page
    size: int  #: bytes mapped by the entry: min of the guest and host page sizes
    writable: bool  #: writes allowed by every dimension of the translation
    dirty: bool = True  #: the dirty flags are set (a write through a clean entry re-walks)


class Invalidation(NamedTuple):
    """TLB entries a control event removes: a ``page`` of one asid, a whole ``asid``, a
    whole ``vm``, or ``all``. ``va`` is used only for ``page``."""

    scope: str
    vm: int = 0
    asid: int = 0
    va: int = 0
