"""`doctor`'s AWS checks with the operator's own credentials, each labelled "as <caller ARN>".

They see what this caller may see: the identity and region, and the pull-through cache rules
(with their upstream credentials validated). The pull through the cache is the controller's to
prove with its own role (see the controller's checks); the caller's permissions say nothing of it.
"""

from __future__ import annotations

from typing import Any

from webhook.controller.ecr import AwsError, caller_identity
from webhook.controller.upstreams import Verifier, configured_upstreams
from webhook.ops.checklist import Result, failed, passed, warned

CHECK = "aws"


def aws_checks(
    sts: Any, ecr: Any, *, region: str, registry: str, account: str, prefix: str, upstreams: dict[str, str]
) -> list[Result]:
    try:
        arn = caller_identity(sts)
    except AwsError as error:
        if error.code == "NoCredentials":
            return [
                warned(
                    CHECK,
                    "AWS identity",
                    "no AWS credentials here: the AWS side is not checked from this machine",
                    "set AWS_PROFILE (or other credentials) for the registry's account to check its rules too",
                )
            ]
        return [
            failed(CHECK, "AWS identity", f"STS GetCallerIdentity failed ({error})", "check the credentials and region")
        ]
    who = f"as {arn}"
    results = [passed(CHECK, f"AWS identity {who}", f"region {region}, registry {registry} (account {account})")]
    verifier = Verifier(
        ecr,
        configured_upstreams(prefix, upstreams, {}),
        lambda: None,
        registry=registry,
        registry_id=account,
    )
    for check in verifier.check_rules():
        name = f"rule {check.prefix} for {check.upstream} {who}"
        if check.problem is None:
            results.append(passed(CHECK, name, "exists, points at the upstream, and its credential (if any) validates"))
        elif "AccessDenied" in check.problem:
            results.append(
                warned(
                    CHECK,
                    name,
                    f"this caller may not read the rules: {check.problem}",
                    "run as a principal allowed ecr:DescribePullThroughCacheRules and ecr:ValidatePullThroughCacheRule",
                )
            )
        else:
            results.append(failed(CHECK, name, check.problem, "do what the message says (README, Troubleshooting)"))
    return results
