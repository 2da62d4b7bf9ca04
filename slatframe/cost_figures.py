"""The figures computed from a run's counts once it has ended: the cost model's
``cycles.*``, the consolidation figures and the derived metrics, for the run's totals and
for each scope. The engine computes them when a run ends (``engine.compute_metrics``),
and ``slatframe recost`` again from a result's saved counts with other costs
(:mod:`slatframe.recosting`): one piece of code for both."""
from __future__ import annotations

from typing import Any, Mapping

from .consolidation import consolidation_metrics
from .derived import derived_metrics, levels_of
from .scope_metrics import Scope, join_scopes


def cost_record(config: Any, registry: Any) -> Any:
    """The registered record of the config's cost model."""
    return registry.get("cost models", config.cost.name)


def data_cache_spec(config: Any, registry: Any) -> Any:
    """The data-cache hierarchy the config's cost model has the engines count
    (``dcache.*`` counters), or None."""
    record = cost_record(config, registry)
    return record.data_caches(config.cost.options) if record.data_caches is not None else None


def costed_metrics(config: Any, registry: Any, totals: Mapping[str, Any],
                   scopes: Mapping[Scope, Mapping[str, Any]]) -> dict[str, Any]:
    """The totals' counts with the cost model's figures, the consolidation figures (if the
    config has a ``[consolidation]`` table) and the derived metrics; then each scope's
    counts with its own cost and derived figures, under the scope's prefix."""
    model = cost_record(config, registry).factory(config.cost.options)
    levels = levels_of(config)
    metrics = dict(totals)
    metrics.update(model.cycles(metrics, config))
    if config.consolidation is not None:
        metrics.update(consolidation_metrics(metrics, config.consolidation))
    metrics.update(derived_metrics(metrics, levels))
    own_scopes = {}
    for scope, counts in scopes.items():
        own = dict(counts)
        own.update(model.cycles(own, config))
        own.update(derived_metrics(own, levels))
        own_scopes[scope] = own
    return join_scopes(metrics, own_scopes)
