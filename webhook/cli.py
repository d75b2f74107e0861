"""`ecr-pullthrough COMMAND [settings]`: one entry point for every process of the product."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliApp

from webhook.settings import (
    ENV_PREFIX,
    ControllerSettings,
    DoctorSettings,
    RemovePullSecretsSettings,
    RewriteCommandSettings,
    ScanSettings,
    WebhookSettings,
)

S = TypeVar("S", bound=BaseSettings)

USAGE = """usage: ecr-pullthrough COMMAND [--help] [settings]

commands:
  webhook    serve the mutating admission webhook over TLS
  rewrite    print what the webhook would do with each IMAGE
  controller keep a fresh ECR pull secret in every namespace
  demo       start a local webhook on a throwaway certificate and show a pod before and after
  scan       read the cluster and show what the webhook would do to every workload (read-only)
  remove-pull-secrets
             after a switch to --pull-secret-mode node-role: remove this installation's pull Secrets
  doctor     check an installation: pass, warn or fail, each with its fix (exit 1 on any fail)

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

    try:
        command = split_rewrite_args(args)
    except ValueError as error:
        print(f"ecr-pullthrough rewrite: {error}", file=sys.stderr)
        return 2
    rules = _load(RewriteCommandSettings, "rewrite", command.settings).rewrite_rules()
    images = list(command.images)
    if command.stdin:
        images += read_images(sys.stdin.buffer.read())
    invalid = False
    for image in images:
        decision = decide(image, rules)
        invalid |= decision.reason is Reason.INVALID_REFERENCE
        if command.output == "json":
            record = {"image": image, "result": decision.image, "reason": decision.reason.value}
            print(json.dumps(record | ({"detail": decision.detail} if decision.detail else {})))
        else:
            detail = f"\t{json.dumps(decision.detail)}" if decision.detail else ""
            print(f"{json.dumps(image)}\t{json.dumps(decision.image)}\t{decision.reason.value}{detail}")
    return 1 if invalid else 0


@dataclass(frozen=True)
class RewriteCommand:
    settings: list[str]
    images: list[str]
    stdin: bool = False
    output: str = "text"


# Flags of `rewrite` that take no value; every other flag (a setting) takes one, as `--x v` or `--x=v`.
_FLAGS_WITHOUT_VALUE = frozenset({"--stdin", "--help", "-h"})


def split_rewrite_args(args: Sequence[str]) -> RewriteCommand:
    """Separate images from flags before any settings library sees them, so images stay verbatim:
    no stripping, comma splitting, JSON decoding or dropping of empty strings."""
    settings: list[str] = []
    images: list[str] = []
    stdin, output = False, "text"
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            images.extend(tokens)
            break
        if not token.startswith("-") or token == "-":
            images.append(token)
            continue
        flag, has_value, value = token.partition("=")
        if flag not in _FLAGS_WITHOUT_VALUE and not has_value:
            following = next(tokens, None)
            if following is None:
                raise ValueError(f"{flag} needs a value")
            value = following
        if flag == "--stdin":
            stdin = True
        elif flag == "--output":
            if value not in ("text", "json"):
                raise ValueError(f"--output is text or json, not {value!r}")
            output = value
        elif flag in _FLAGS_WITHOUT_VALUE:
            settings.append(flag)
        else:
            settings += [flag, value]
    return RewriteCommand(settings, images, stdin, output)


def read_images(data: bytes) -> list[str]:
    """One image per line, or per NUL if the input holds one; a final separator ends the last image."""
    text = data.decode("utf-8", errors="surrogateescape")
    separator = "\0" if "\0" in text else "\n"
    images = text.split(separator)
    if images and images[-1] == "":
        images.pop()
    return images


def run_controller(args: Sequence[str]) -> int:
    from webhook.controller.app import run

    return run(_load(ControllerSettings, "controller", args))


def run_scan(args: Sequence[str]) -> int:
    from webhook.ops.command import scan

    _release_defaults("scan", args)
    return scan(_load(ScanSettings, "scan", args))


def run_remove_pull_secrets(args: Sequence[str]) -> int:
    from webhook.ops.cleanup import run

    return run(_load(RemovePullSecretsSettings, "remove-pull-secrets", args))


def run_doctor(args: Sequence[str]) -> int:
    from webhook.ops.doctor import doctor

    _release_defaults("doctor", args)
    return doctor(_load(DoctorSettings, "doctor", args))


def _release_defaults(command: str, args: Sequence[str]) -> None:
    """With `--release NAME`: the installed release's settings become environment defaults (flags still win)."""
    from webhook.ops.release import ReleaseNotFoundError, release_environment

    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for name in ("--release", "--namespace", "--kubeconfig"):
        early.add_argument(name)
    try:
        known, _ = early.parse_known_args(list(args))
    except argparse.ArgumentError:
        return  # the settings' own parser says what is wrong
    release = known.release or os.environ.get(f"{ENV_PREFIX}RELEASE", "")
    if not release:
        return
    namespace = known.namespace or os.environ.get(f"{ENV_PREFIX}NAMESPACE", "ecr-pullthrough")
    kubeconfig = known.kubeconfig or os.environ.get(f"{ENV_PREFIX}KUBECONFIG")
    try:
        found = release_environment(Path(kubeconfig) if kubeconfig else None, namespace, release)
    except ReleaseNotFoundError as error:
        print(f"ecr-pullthrough {command}: --release {release}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for key, value in found.items():
        os.environ.setdefault(key, value)


def run_demo(args: Sequence[str]) -> int:
    from webhook.admission.demo import run

    return run(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "webhook": run_webhook,
    "rewrite": run_rewrite,
    "controller": run_controller,
    "demo": run_demo,
    "scan": run_scan,
    "remove-pull-secrets": run_remove_pull_secrets,
    "doctor": run_doctor,
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
