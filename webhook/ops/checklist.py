"""`doctor`'s checklist: each line pass, warn or fail, with the fix in one sentence. Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Result:
    check: str  # the group `--check` selects: controller, aws, pull-secrets, ...
    name: str  # what this line is about, e.g. "upstream docker.io"
    status: Status
    message: str  # what was found
    fix: str = ""  # one sentence; empty on pass


def passed(check: str, name: str, message: str) -> Result:
    return Result(check, name, "pass", message)


def warned(check: str, name: str, message: str, fix: str) -> Result:
    return Result(check, name, "warn", message, fix)


def failed(check: str, name: str, message: str, fix: str) -> Result:
    return Result(check, name, "fail", message, fix)


def forbidden(check: str, name: str, rule: str, where: str = "") -> Result:
    """A check that could not run for lack of a permission names the rule to grant."""
    scope = f" in {where}" if where else ""
    return failed(
        check, name, f"cannot {rule}{scope} (RBAC): not checked", f"grant `{rule}`{scope} to whoever runs this"
    )


@dataclass
class Checklist:
    results: list[Result] = field(default_factory=list)

    def add(self, *results: Result) -> None:
        self.results.extend(results)

    @property
    def ok(self) -> bool:
        return all(result.status != "fail" for result in self.results)

    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> str:
        counts = {status: sum(r.status == status for r in self.results) for status in ("pass", "warn", "fail")}
        return json.dumps({"ok": self.ok, "counts": counts, "results": [asdict(r) for r in self.results]}, indent=2)

    def to_text(self) -> str:
        lines = []
        for result in self.results:
            lines.append(f"{result.status.upper():4}  {result.name}: {result.message}")
            if result.fix:
                lines.append(f"      fix: {result.fix}")
        counts = {status: sum(r.status == status for r in self.results) for status in ("pass", "warn", "fail")}
        lines.append(f"\n{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
        return "\n".join(lines) + "\n"
