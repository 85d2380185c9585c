"""Which field names hold resource ids and which hold atoms, so that the tracer can show
the first in hex and resolve the second to names. Resource fields are read from the
`rq.Resource` fields of every layout the decoder knows (`tables.py`), once, at import.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from Xlib.protocol import rq

from .tables import CORE_EVENTS, CORE_REQUESTS, EXTENSIONS

__all__ = ["ATOM_FIELDS", "RESOURCE_FIELDS", "resource_fields"]


def resource_fields(layouts: Iterable[Any]) -> frozenset[str]:
    """The names of the `rq.Resource` fields in `layouts` and the layouts nested in them,
    plus the resource fields of an error (`resource_id`, `bad_value_resource`)."""
    names = {"resource_id", "bad_value_resource"}
    seen: set[int] = set()

    def walk(s: Any) -> None:
        if not isinstance(s, rq.Struct) or id(s) in seen:
            return
        seen.add(id(s))
        for f in s.fields:
            if isinstance(f, rq.Resource) and f.name:
                names.add(f.name)
            walk(getattr(f, "type", None))

    for s in layouts:
        walk(s)
    return frozenset(names)


def _known_layouts() -> list[Any]:
    return [*(c._request for c in CORE_REQUESTS.values()),
            *(getattr(c, "_reply", None) for c in CORE_REQUESTS.values()),
            *(c._fields for c in CORE_EVENTS.values()),
            *(s for spec in EXTENSIONS.values() for pair in spec.layouts.values() for s in pair),
            *(s for spec in EXTENSIONS.values() for s in spec.event_layouts.values()),
            *(s for spec in EXTENSIONS.values() for s in spec.generic_layouts.values())]


#: Field names that hold resource ids (shown in hex by the text tracer), from the
#: Resource field types of every layout known here.
RESOURCE_FIELDS: frozenset[str] = resource_fields(_known_layouts())
#: Field names that hold atoms, resolved to names by the tracer.
ATOM_FIELDS = frozenset({"atom", "property", "type", "selection", "target", "property_type",
                         "client_type", "atoms", "properties", "name_atom", "label"})
