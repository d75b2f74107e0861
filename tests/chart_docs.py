"""The chart README's values table, generated from the `# --` comments of values.yaml (helm-docs' convention).

    python -m tests.chart_docs          # rewrite the table in chart/README.md
    python -m tests.chart_docs --check  # exit 1 if it is out of date (the tests check this too)

A `# -- text` comment (continued by plain `#` lines) documents the key below it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "chart"
START, END = "<!-- values:start -->", "<!-- values:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")


def _documented(lines: list[str]) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment, in file order."""
    found: list[tuple[str, str]] = []
    parents: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped.removeprefix("#").strip())
            continue
        match = _KEY.match(line)
        if match is None or stripped.startswith("-"):
            if not stripped.startswith("#"):
                comment = None if stripped else comment
            continue
        indent = len(match["indent"])
        parents = [(i, k) for i, k in parents if i < indent]
        path = ".".join([k for _, k in parents] + [match["key"]])
        if comment is not None:
            found.append((path, " ".join(part for part in comment if part)))
            comment = None
        parents.append((indent, match["key"]))
    return found


def _lookup(values: Any, path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "any"
    )


def values_table(values_file: Path) -> str:
    text = values_file.read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, description in _documented(text.splitlines()):
        value = _lookup(values, path)
        default = json.dumps(value, separators=(", ", ": ")).replace("|", "\\|")
        described = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(value)} | `{default}` | {described} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    readme = CHART / "README.md"
    text = readme.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    updated = f"{before}{START}\n{values_table(CHART / 'values.yaml')}\n{END}{after}"
    if "--check" in argv:
        if updated != text:
            print("chart/README.md's values table is out of date: run `make chart-docs`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
