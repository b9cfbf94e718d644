"""Stages and input sources registered by the name a ``pipelines.yaml`` uses for them.

A stage class registers itself with ``@register_stage`` when its module is imported.  Which
modules to import comes from the ``winnow.stages`` entry-point group of every installed
distribution: winnow's own ``stages`` package is one entry there (see pyproject.toml), a user's
package is another, so both are found the same way and the engine never imports a stage package
by name.  A user package declares, in its pyproject.toml::

    [project.entry-points."winnow.stages"]
    my_stages = "my_package.stages"      # a module whose import registers stages / sources

Stage modules keep heavy imports (trafilatura, fastText, ...) inside ``setup()``, so that
``winnow validate`` stays well under a second.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.source import Source
    from pipeline.stage import Stage

ENTRY_POINT_GROUP = "winnow.stages"

STAGES: dict[str, type[Stage]] = {}
SOURCES: dict[str, type[Source]] = {}
# where each name came from: the entry point (distribution and value) that registered it
ORIGINS: dict[str, str] = {}
_loaded = False
_loading: str | None = None


class PluginError(ImportError):
    """A ``winnow.stages`` entry point that cannot be loaded, or that clashes with another."""


def register_stage(cls: type[Stage]) -> type[Stage]:
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    other = STAGES.get(cls.name, cls)
    if other is not cls:
        raise PluginError(
            f"stage name {cls.name!r} registered twice: by {other.__module__}.{other.__qualname__} "
            f"({ORIGINS.get(cls.name, '?')}) and by {cls.__module__}.{cls.__qualname__} ({_loading or '?'})"
        )
    STAGES[cls.name] = cls
    ORIGINS.setdefault(cls.name, _loading or cls.__module__)
    return cls


def register_source(cls: type[Source]) -> type[Source]:
    other = SOURCES.get(cls.format, cls)
    if other is not cls:
        raise PluginError(
            f"input format {cls.format!r} registered twice: by {other.__module__} and by {cls.__module__}"
        )
    SOURCES[cls.format] = cls
    return cls


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """Every entry point of ``group`` across the installed distributions, sorted by name.

    Not ``metadata.entry_points(group=...)``: that keeps one distribution per name (the first on
    ``sys.path``), which is a stale ``winnow.egg-info`` left in the source folder whenever Python
    runs there (pytest does), hiding the installed metadata."""
    found: dict[tuple[str, str], metadata.EntryPoint] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == group:
                found.setdefault((ep.name, ep.value), ep)
    return [found[k] for k in sorted(found)]


def load_stages() -> None:
    """Import every module named in the ``winnow.stages`` entry-point group (once per process)."""
    global _loaded, _loading
    if _loaded:
        return
    eps = entry_points(ENTRY_POINT_GROUP)
    if not eps:
        raise PluginError(
            f"no {ENTRY_POINT_GROUP!r} entry points are installed: winnow's own stages register "
            "through one; install the package (pip install -e .) rather than running it from a "
            "source folder"
        )
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "?"
        _loading = f"entry point {ep.name} = {ep.value} of {dist}"
        try:
            ep.load()
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{_loading}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
        finally:
            _loading = None
    _loaded = True

