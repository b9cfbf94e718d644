"""``winnow stages``: every registered stage and input format, with its parameters and its file.

One hop from a ``pipelines.yaml`` key to the code: the listing names the file that defines each
stage (several stages may share one, e.g. the four quality filters), the entry point that
registered it (winnow's own ``stages`` package or a user's package), its resources, and every
parameter with its type, default and description, read from the stage's pydantic ``Params``.
"""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline import registry


def type_name(annotation: Any) -> str:
    """``int``, ``list[str]``, ``'a' | 'b'``, ``float | None``: readable, without ``typing.``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


_BOUNDS = {
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "min_length": "min length",
    "max_length": "max length",
}


def _constraints(field: FieldInfo) -> list[str]:
    out = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return out


def describe_params(model: type) -> list[dict[str, Any]]:
    params = []
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            default: Any = field.default_factory()
        else:
            default = None if field.default is PydanticUndefined else field.default
        params.append(
            {
                "name": name,
                "type": type_name(field.annotation),
                "required": field.is_required(),
                "default": default,
                "constraints": _constraints(field),
                "description": field.description or "",
            }
        )
    return params


def _file(obj: Any) -> str:
    path = inspect.getsourcefile(obj) or ""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def _summary(obj: Any) -> str:
    """The first paragraph of the class's own docstring, else of its module's (a class without
    one would otherwise show its base class's text)."""
    doc = obj.__dict__.get("__doc__") or inspect.getmodule(obj).__doc__ or ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").replace("``", "")


def _short(text: str, width: int = 100) -> str:
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)[0]
    return first if len(first) <= width else first[: width - 1] + "…"


def catalog() -> list[dict[str, Any]]:
    """Every stage (pipeline order of the built-ins is not known here: sorted by name), then every
    input format."""
    registry.load_stages()
    entries = []
    for name, cls in sorted(registry.STAGES.items()):
        res = cls.resources
        entries.append(
            {
                "name": name,
                "kind": "barrier stage" if cls.barrier else "stage",
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "file": _file(cls),
                "registered_by": registry.ORIGINS.get(name, cls.__module__),
                "summary": _summary(cls),
                "resources": {"cpus": res.cpus, "memory_mb": res.memory_mb, "gpus": res.gpus},
                "passes_through": cls.passes_through,
                "params": describe_params(cls.Params),
            }
        )
    for fmt, src in sorted(registry.SOURCES.items()):
        entries.append(
            {
                "name": fmt,
                "kind": "input format",
                "class": f"{src.__module__}.{src.__qualname__}",
                "file": _file(src),
                "registered_by": src.__module__,
                "summary": _summary(src),
                "params": [p for p in describe_params(src.Params) if p["name"] != "format"],
            }
        )
    return entries


def _default(p: dict[str, Any]) -> str:
    if p["required"]:
        return "required"
    return repr(p["default"])


def print_catalog(entries: list[dict[str, Any]], detailed: bool = False) -> None:
    """Plain text (no table widths to break in a narrow terminal or a pipe)."""
    kinds = ["stage", "barrier stage", "input format"]
    for kind in kinds:
        group = [e for e in entries if e["kind"] == kind]
        if not group:
            continue
        if not detailed:
            print(f"{kind}s:" if kind != "input format" else "input formats (input.format):")
        for e in group:
            head = f"{e['name']}  [{e['kind']}]  {e['file']}"
            print(head if detailed else f"  {head}")
            indent = "  " if detailed else "    "
            if e["summary"]:
                print(f"{indent}{e['summary'] if detailed else _short(e['summary'])}")
            if detailed:
                print(f"{indent}class: {e['class']}  (registered by {e['registered_by']})")
                if "resources" in e:
                    r = e["resources"]
                    extra = ", passes rows through unchanged" if e.get("passes_through") else ""
                    print(f"{indent}resources: {r['cpus']} CPU, {r['memory_mb']} MB, {r['gpus']} GPU{extra}")
                print(f"{indent}parameters:")
            for p in e["params"]:
                bounds = f" ({', '.join(p['constraints'])})" if p["constraints"] else ""
                line = f"{indent}  {p['name']}: {p['type']} = {_default(p)}{bounds}"
                print(line)
                if p["description"]:
                    print(f"{indent}      {p['description']}")
            if not detailed:
                print()
