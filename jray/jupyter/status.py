"""``%jray status``: nodes, resources used/total, tasks by state, object store, engines.

``bundle()`` returns a mimebundle with an HTML table and a plain-text fallback,
built from what the notebook's backend reports (a backend that cannot say how
full its object store is leaves that row out).
"""

from __future__ import annotations

import html
from typing import Any

from jray.jupyter.backends.base import Backend


def rows(backend: Backend, engines: dict[str, Any]) -> list[tuple[str, str]]:
    """(section, text) pairs shared by the HTML and text views."""
    total = backend.cluster_resources()
    avail = backend.available_resources()
    out: list[tuple[str, str]] = [("backend", backend.name)]
    for node in backend.nodes():
        out.append(("node", f"{node['NodeID']} on {node['NodeManagerHostname']} "
                            f"({'alive' if node['Alive'] else 'dead'}, "
                            f"{node.get('Workers', 0)} workers)"))
    for name in sorted(total):
        used = total[name] - avail.get(name, 0.0)
        out.append(("resource", f"{name}: {used:g} / {total[name]:g} used"))
    try:
        tasks = backend.task_counts()
        out.append(("tasks", ", ".join(f"{k}: {v}" for k, v in sorted(tasks.items()))
                    or "none"))
    except LookupError as e:  # the backend cannot say (Ray without its dashboard)
        out.append(("tasks", f"unknown: {e}"))
    out += [("object store", row) for row in backend.store_rows()]
    out.append(("engines", ", ".join(engines) or "none"))
    return out


def bundle(backend: Backend, engines: dict[str, Any]) -> dict[str, str]:
    data = rows(backend, engines)
    text = "\n".join(f"{section:>12}  {value}" for section, value in data)
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(s)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for s, v in data)
    return {"text/plain": f"{backend.name} cluster\n" + text,
            "text/html": f"<b>{backend.name} cluster</b><table>{cells}</table>"}
