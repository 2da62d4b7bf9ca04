"""Stand-ins for the policy dispatch that :mod:`slatframe.engine.codegen` generates.

The compiled loop (``loop.py``) calls ``policy_hit/fill/victim/invalidate(pid, state,
pk, i, s, w)``; the generated module defines them over the inline policies' kernels and
the kernel addresses ``pk``. These stubs only make ``loop.py`` importable for reading and
linting.
"""
from numba import njit


@njit(cache=True, _nrt=False)
def policy_hit(pid, state, pk, i, s, w):
    raise RuntimeError("policy dispatch not generated")


@njit(cache=True, _nrt=False)
def policy_fill(pid, state, pk, i, s, w):
    raise RuntimeError("policy dispatch not generated")


@njit(cache=True, _nrt=False)
def policy_invalidate(pid, state, pk, i, s, w):
    raise RuntimeError("policy dispatch not generated")


@njit(cache=True, _nrt=False)
def policy_victim(pid, state, pk, i, s):
    raise RuntimeError("policy dispatch not generated")
