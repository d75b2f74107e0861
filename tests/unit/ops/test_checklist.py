"""doctor's checklist: a line per result, the fix under a problem, exit 1 on any fail (warnings do not fail)."""

import json

from webhook.ops.checklist import Checklist, failed, forbidden, passed, warned


def test_warnings_pass_and_a_failure_fails() -> None:
    checklist = Checklist()
    checklist.add(passed("aws", "AWS identity", "ok"), warned("controller", "events", "2 events", "read them"))
    assert checklist.exit_status() == 0
    checklist.add(failed("webhook", "webhook answers", "came back unchanged", "check the Service"))
    assert checklist.exit_status() == 1


def test_text_puts_each_fix_under_its_line_and_counts() -> None:
    checklist = Checklist()
    checklist.add(
        passed("aws", "AWS identity", "ok"), forbidden("upstream-status", "upstream status", "get configmaps")
    )
    assert checklist.to_text() == (
        "PASS  AWS identity: ok\n"
        "FAIL  upstream status: cannot get configmaps (RBAC): not checked\n"
        "      fix: grant `get configmaps` to whoever runs this\n"
        "\n1 passed, 0 warnings, 1 failed\n"
    )


def test_json_has_every_result_and_the_verdict() -> None:
    checklist = Checklist()
    checklist.add(warned("controller", "events", "2 events", "read them"))
    document = json.loads(checklist.to_json())
    assert document == {
        "ok": True,
        "counts": {"pass": 0, "warn": 1, "fail": 0},
        "results": [
            {"check": "controller", "name": "events", "status": "warn", "message": "2 events", "fix": "read them"}
        ],
    }
