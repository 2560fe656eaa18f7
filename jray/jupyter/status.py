"""``%jray status``: nodes, resources used/total, tasks by state, object store, engines.

``bundle()`` returns a mimebundle with an HTML table and a plain-text fallback,
built from the public state API only.
"""

from __future__ import annotations

import html
from typing import Any

import jray
import jray.state


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def rows(engines: dict[str, Any]) -> list[tuple[str, str]]:
    """(section, text) pairs shared by the HTML and text views."""
    total = jray.cluster_resources()
    avail = jray.available_resources()
    out: list[tuple[str, str]] = []
    for node in jray.nodes():
        out.append(("node", f"{node['NodeID']} on {node['NodeManagerHostname']} "
                            f"({'alive' if node['Alive'] else 'dead'}, "
                            f"{node.get('Workers', 0)} workers)"))
    for name in sorted(total):
        used = total[name] - avail.get(name, 0.0)
        out.append(("resource", f"{name}: {used:g} / {total[name]:g} used"))
    summary = jray.state.summary()
    tasks = summary.get("tasks", {})
    out.append(("tasks", ", ".join(f"{k}: {v}" for k, v in sorted(tasks.items())) or "none"))
    for node_id, store in jray.state.store_summary().items():
        out.append(("object store", f"{node_id}: {_mib(store['used'])} / "
                                    f"{_mib(store['capacity'])} used, "
                                    f"{_mib(store['spilled_bytes'])} spilled, "
                                    f"{summary.get('objects', 0)} objects"))
    out.append(("engines", ", ".join(engines) or "none"))
    return out


def bundle(engines: dict[str, Any]) -> dict[str, str]:
    data = rows(engines)
    text = "\n".join(f"{section:>12}  {value}" for section, value in data)
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(s)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for s, v in data)
    return {"text/plain": "jray cluster\n" + text,
            "text/html": f"<b>jray cluster</b><table>{cells}</table>"}
