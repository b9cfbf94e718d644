"""Stages and input sources registered by the name a ``pipelines.yaml`` uses for them.

Stage modules register themselves on import (``@register_stage``); ``load_builtin`` imports the
``stages`` package, whose modules keep heavy imports (trafilatura, fastText, ...) inside
``setup()`` so that ``winnow validate`` stays well under a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.source import Source
    from pipeline.stage import Stage

STAGES: dict[str, type[Stage]] = {}
SOURCES: dict[str, type[Source]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if STAGES.get(cls.name, cls) is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    return cls


def register_source(cls: type[Source]) -> type[Source]:
    if SOURCES.get(cls.format, cls) is not cls:
        raise ValueError(f"input format {cls.format!r} registered twice")
    SOURCES[cls.format] = cls
    return cls


def load_builtin() -> None:
    import stages  # noqa: F401  (registers everything it imports)
