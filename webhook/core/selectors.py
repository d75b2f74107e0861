"""Equality-based Kubernetes label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`), matched client-side.

The controller watches every namespace and decides locally, so that a
namespace whose labels change is seen either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Selector = Callable[[Mapping[str, str]], bool]
_REQUIREMENT = re.compile(
    r"^\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*))?\s*$"
)


def parse_selector(text: str) -> Selector:
    """A predicate over labels; an empty selector matches nothing here (nothing is excluded)."""
    requirements: list[tuple[str, str, str]] = []  # (operator, key, value)
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _REQUIREMENT.match(part)
        if match is None or (match["not"] and match["op"]):
            raise ValueError(f"not an equality-based label selector requirement: {part!r}")
        operator = "!exists" if match["not"] else {None: "exists", "==": "="}.get(match["op"], match["op"])
        requirements.append((operator, match["key"], match["value"] or ""))

    def matches(labels: Mapping[str, str]) -> bool:
        return bool(requirements) and all(_holds(r, labels) for r in requirements)

    return matches


def _holds(requirement: tuple[str, str, str], labels: Mapping[str, str]) -> bool:
    operator, key, value = requirement
    if operator == "exists":
        return key in labels
    if operator == "!exists":
        return key not in labels
    if operator == "!=":
        return labels.get(key) != value
    return labels.get(key) == value
