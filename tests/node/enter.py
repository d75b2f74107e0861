"""Run a command inside the node test bed's private network and mount namespace.

The ECR host name must resolve to 127.0.0.1 for the kubelet and containerd,
and it resolves publicly too; so everything of the node tests (control plane,
registries, fake ECR, controller, webhook, containerd, kubelet, pytest) runs in
a namespace of its own, entered through `unshare --net --mount --fork`
(Python 3.11 has no os.unshare):
- loopback is brought up; there is no other interface, so no traffic leaves it;
- a private /etc/hosts is bind-mounted over the machine's, which is never edited;
- containerd's and the kubelet's fixed state directories get private tmpfs
  mounts, so nothing of the machine's own is touched and all is gone on exit.

Usage: python -m tests.node.enter COMMAND [ARG ...]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
INSIDE = "ECR_PULLTHROUGH_NODE_BED"  # set inside the namespace; the node tests run only there
OUTER = "ECR_PULLTHROUGH_NODE_BED_OUTER"  # the namespaces entered from (the machine's /proc/1 is not readable here)
# Fixed paths of containerd and the kubelet (some, like the shims' sockets, are not configurable).
PRIVATE_DIRS = ("/run/containerd", "/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers")


def namespaces() -> str:
    """This process's network and mount namespaces (each must differ inside from outside)."""
    return " ".join(os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "mnt"))


def hosts_file(folder: Path) -> Path:
    path = folder / "hosts"
    path.write_text(f"127.0.0.1\tlocalhost {ECR_HOST}\n::1\tlocalhost ip6-localhost\n")
    return path


def inside(command: list[str]) -> int:
    # Everything below (a bind mount over /etc/hosts, killing leftovers) is only safe in a namespace of our own.
    outer = os.environ.pop(OUTER, "")
    if not outer or outer == namespaces():
        raise SystemExit("--inside runs only in private namespaces: use `python -m tests.node.enter CMD`")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    folder = Path(tempfile.mkdtemp(prefix="ecr-pullthrough-node-"))
    subprocess.run(["mount", "--bind", str(hosts_file(folder)), "/etc/hosts"], check=True)
    for directory in PRIVATE_DIRS:
        os.makedirs(directory, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
    os.environ[INSIDE] = "1"
    try:
        return run_in_own_group(command)
    finally:
        kill_leftovers()
        subprocess.run(["umount", "/etc/hosts"], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def run_in_own_group(command: list[str]) -> int:
    """Run `command` in a process group of its own and wait for it to end.

    The terminal's Ctrl-C goes to its foreground process group, and the command's processes (etcd,
    kube-apiserver, the kubelet...) would all die at once, under the command that stops them in order.
    In a group of their own they do not get it: this process passes SIGINT and SIGTERM on to the command
    alone, and waits while it stops what it started.
    """
    # unshare ignores SIGINT while it waits, and an ignored signal stays ignored across exec: the command
    # gets it back, so that Python turns it into KeyboardInterrupt (pytest, the demo) and unwinds.
    process = subprocess.Popen(command, process_group=0, preexec_fn=_default_interrupt)
    handlers = {
        signum: signal.signal(signum, lambda received, _: process.send_signal(received))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return process.wait()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(child) for child in listed.read().split()]
    except OSError:
        return []


def kill_leftovers() -> None:
    """SIGKILL what the run left in this network namespace (containers, shims), not this process or its parents."""
    own = os.readlink("/proc/self/ns/net")
    keep = set()
    pid = os.getpid()
    while pid > 1:
        keep.add(pid)
        with open(f"/proc/{pid}/stat") as stat:
            pid = int(stat.read().rsplit(")", 1)[1].split()[1])
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") == own:
                os.kill(int(entry), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def main(argv: list[str]) -> int:
    if argv[:1] == ["--inside"]:
        return inside(argv[1:])
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        message = "the node tests need root (network and mount namespaces, containerd, the kubelet)"
        if os.environ.get("CI") == "true":  # CI runs as root: there a missing root is a broken pipeline
            print(message, file=sys.stderr)
            return 2
        print(f"SKIPPED: {message}; run `sudo make test-node`", file=sys.stderr)
        return 0
    # --kill-child: should unshare itself be killed, the process inside gets SIGTERM and unwinds.
    unshare = ["unshare", "--net", "--mount", "--propagation", "private", "--fork", "--kill-child=SIGTERM", "--"]
    command = [*unshare, sys.executable, "-m", "tests.node.enter", "--inside", *argv]
    process = subprocess.Popen(command, env=dict(os.environ, **{OUTER: namespaces()}))
    # Ctrl-C reaches the process inside directly (same process group); unshare waits for it, and so do we.
    # A SIGTERM sent to us is passed to it too (unshare itself ignores SIGINT and SIGTERM while it waits).
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminate = signal.signal(
        signal.SIGTERM, lambda signum, _: [os.kill(child, signum) for child in children(process.pid)]
    )
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
