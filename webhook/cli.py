"""`ecr-pullthrough COMMAND [settings]`: one entry point for every process of the product."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliApp

from webhook.settings import ENV_PREFIX, ControllerSettings, RewriteCommandSettings, WebhookSettings

S = TypeVar("S", bound=BaseSettings)

USAGE = """usage: ecr-pullthrough COMMAND [--help] [settings]

commands:
  webhook    serve the mutating admission webhook over TLS
  rewrite    print what the webhook would do with each IMAGE
  controller keep a fresh ECR pull secret in every namespace
  demo       start a local webhook on a throwaway certificate and show a pod before and after

Every setting is a flag and an environment variable ECR_PULLTHROUGH_<NAME>; see `COMMAND --help`.
"""


def _load(model: type[S], command: str, args: Sequence[str]) -> S:
    """Read the settings of `command` from flags and environment; stop with a message naming a bad one."""
    model.model_config["cli_prog_name"] = f"ecr-pullthrough {command}"
    try:
        return CliApp.run(model, cli_args=list(args))
    except ValidationError as error:
        for problem in error.errors():
            name = str(problem["loc"][0]) if problem["loc"] else ""
            message = str(problem["msg"]).removeprefix("Value error, ")
            if not name:  # a check across settings names the one it is about: "registry: ..."
                named, _, rest = message.partition(": ")
                if named in model.model_fields:
                    name, message = named, rest
            where = f"--{name.replace('_', '-')} ({ENV_PREFIX}{name.upper()})" if name else "settings"
            print(f"ecr-pullthrough {command}: invalid setting {where}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def run_webhook(args: Sequence[str]) -> int:
    from webhook.admission.server import serve

    serve(_load(WebhookSettings, "webhook", args))
    return 0


def run_rewrite(args: Sequence[str]) -> int:
    from webhook.core.rewrite import Reason, decide

    settings = _load(RewriteCommandSettings, "rewrite", args)
    rules = settings.rewrite_rules()
    invalid = False
    for image in settings.images:
        decision = decide(image, rules)
        invalid |= decision.reason is Reason.INVALID_REFERENCE
        reason = decision.reason.value + (f" ({decision.detail})" if decision.detail else "")
        print(f"{image}\t{decision.image}\t{reason}")
    return 1 if invalid else 0


def run_controller(args: Sequence[str]) -> int:
    from webhook.controller.app import run

    return run(_load(ControllerSettings, "controller", args))


def run_demo(args: Sequence[str]) -> int:
    from webhook.admission.demo import run

    return run(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "webhook": run_webhook,
    "rewrite": run_rewrite,
    "controller": run_controller,
    "demo": run_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"ecr-pullthrough: unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
