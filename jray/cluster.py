"""Growing a cluster from Python: node daemons on other machines over SSH.

``%jray start --ssh user@host1,user@host2`` in a notebook calls ``start_ssh``;
scripts call it directly after joining a cluster with ``jray.init(address=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from jray._private.net.ssh import SshNode

__all__ = ["SshNode", "start_ssh"]


def start_ssh(hosts: str | Sequence[str], *, num_cpus: float | None = None,
              python: str = "python3", ssh_options: Sequence[str] = ()) -> list[SshNode]:
    """Start a node daemon on each of ``hosts`` over SSH and wait until all have joined
    this driver's cluster; returns one ``SshNode`` (``.host``, ``.stop()``) per host.

    ``hosts``: ``"user@host1,user@host2"`` or a list of ``user@host``. The driver must
    have joined a TCP cluster first (``jray.init(address="HOST:PORT")``; the head
    bound to an address the hosts reach, ``jray start --head --bind ADDR``).
    ``num_cpus``: CPUs each new node offers (default: all of its machine's).
    ``python``: the remote interpreter that has jray installed. ``ssh_options``:
    extra arguments for the OpenSSH client, e.g. ``["-p", "2222", "-i", key]``.

    The OpenSSH client uses your own keys, agent and ``~/.ssh/config`` with
    ``BatchMode=yes`` (it never prompts). The cluster secret travels on the SSH
    channel's stdin, never on a command line. The nodes stop when this driver
    leaves the cluster (``jray.shutdown()``) or its process dies, or with
    ``SshNode.stop()``. Raises ``InitError`` when the driver is not connected to a
    TCP cluster, or a host does not join within 60 s (with what ssh printed), and
    ``ValueError`` naming ``hosts`` when it is empty or malformed.
    """
    from jray._private.net import ssh

    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",")]
    if not hosts or any(not isinstance(h, str) or not h or h.startswith("-") for h in hosts):
        raise ValueError(f"jray.cluster.start_ssh: hosts must be 'user@host[,user@host...]' "
                         f"or a list of them, got {hosts!r}")
    if isinstance(num_cpus, bool) or (num_cpus is not None and (
            not isinstance(num_cpus, (int, float)) or num_cpus < 0)):
        raise ValueError(f"jray.cluster.start_ssh: num_cpus must be a number >= 0, "
                         f"got {num_cpus!r}")
    if not isinstance(python, str) or not python:
        raise ValueError(f"jray.cluster.start_ssh: python must be a path or command, "
                         f"got {python!r}")
    if isinstance(ssh_options, str):
        raise ValueError("jray.cluster.start_ssh: ssh_options is a list of arguments, "
                         f"not one string ({ssh_options!r})")
    return ssh.start_nodes(list(hosts), num_cpus=num_cpus, python=python,
                           ssh_options=list(ssh_options))
