"""Turn a results document into ratios, a plain-text table and a Markdown table.

The results document is the JSON the runner writes (see
:func:`benchmarks.microbenchmark.run`): ``workloads`` (name, unit,
higher_is_better), ``peers`` (per peer: status, version, results per
workload) and ``ratios``. Ratios are jray's value against each peer's,
oriented so that **> 1 means jray is better**: ``jray / peer`` for rates
(higher is better), ``peer / jray`` for times (lower is better).
"""

from __future__ import annotations

from typing import Any

DASH = "\u2013"  # en dash: the peer has no equivalent of this workload
BASELINE = "jray"


def compute_ratios(doc: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{peer: {workload: ratio}}`` for every peer other than jray."""
    peers: dict[str, Any] = doc["peers"]
    base = peers.get(BASELINE)
    if base is None or base.get("status") == "unavailable":
        return {}
    ratios: dict[str, dict[str, float | None]] = {}
    for name, peer in peers.items():
        if name == BASELINE or peer.get("status") == "unavailable":
            continue
        row: dict[str, float | None] = {}
        for wl in doc["workloads"]:
            mine = _ok_value(base, wl["name"])
            theirs = _ok_value(peer, wl["name"])
            if mine is None or theirs is None or mine <= 0 or theirs <= 0:
                row[wl["name"]] = None
            elif wl["higher_is_better"]:
                row[wl["name"]] = mine / theirs
            else:
                row[wl["name"]] = theirs / mine
        ratios[name] = row
    return ratios


def _ok_value(peer: dict[str, Any], workload: str) -> float | None:
    result = peer.get("results", {}).get(workload)
    if result is None or result.get("status") != "ok":
        return None
    value = result.get("value")
    return float(value) if isinstance(value, (int, float)) else None


def format_value(value: float) -> str:
    """Three significant digits or so, with thousands separators for big rates."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return DASH
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def _cell(peer: dict[str, Any], workload: str) -> str:
    result = peer.get("results", {}).get(workload)
    if result is None:
        return {"timeout": "timeout", "crashed": "crashed"}.get(peer.get("status", ""), DASH)
    status = result.get("status")
    if status == "ok":
        return format_value(float(result["value"]))
    if status == "n/a":
        return DASH
    return str(status)


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by both renderings; unavailable peers are left out."""
    shown = [n for n, p in doc["peers"].items() if p.get("status") != "unavailable"]
    ratios: dict[str, dict[str, float | None]] = doc.get("ratios") or {}
    ratio_peers = [n for n in shown if n in ratios]
    header = ["workload", "unit", *shown, *(f"{BASELINE}/{n}" for n in ratio_peers)]
    rows: list[list[str]] = []
    for wl in doc["workloads"]:
        name = wl["name"]
        row = [name, wl["unit"]]
        row += [_cell(doc["peers"][n], name) for n in shown]
        row += [format_ratio(ratios[n].get(name)) for n in ratio_peers]
        rows.append(row)
    return header, rows


def _footnotes(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if doc.get("ratios"):
        lines.append(
            f"Ratios: {BASELINE} vs peer, > 1 means {BASELINE} is better "
            "(rates: jray/peer; times: peer/jray)."
        )
    meta = doc.get("meta", {})
    if meta.get("quick"):
        lines.append(
            "Quick mode (smoke test): sizes are shrunk, names keep the full-size labels; "
            f"sizes: {_sizes_text(doc.get('sizes', {}))}."
        )
    versions = [f"{n} {p['version']}" for n, p in doc["peers"].items() if p.get("version")]
    if versions:
        lines.append(
            f"Versions: {', '.join(versions)}; num_cpus={meta.get('num_cpus')}, "
            f"{meta.get('cpu_count')} CPUs on the machine, Python {meta.get('python')}."
        )
    loads = [
        f"{n} {p['loadavg_start']} \u2192 {p['loadavg_end']}"
        for n, p in doc["peers"].items()
        if p.get("loadavg_start") and p.get("loadavg_end")
    ]
    if loads:
        lines.append(
            f"Load average (1/5/15 min) at start \u2192 end of each peer: {'; '.join(loads)}."
        )
    for name, peer in doc["peers"].items():
        if peer.get("status") != "ok":
            lines.append(f"{name}: {peer.get('status')}: {peer.get('note', '')}".rstrip(": "))
        for wl, result in peer.get("results", {}).items():
            if result.get("status") == "error":
                lines.append(f"{name} {wl}: {result.get('detail', '')}")
    return lines


def _sizes_text(sizes: dict[str, Any]) -> str:
    mib = int(sizes.get("array_bytes", 0)) // (1024 * 1024)
    return (
        f"{sizes.get('sync_tasks')} sync / {sizes.get('async_tasks')} async tasks, "
        f"{sizes.get('put_calls')} puts, {sizes.get('get_calls')} gets, {mib} MiB arrays, "
        f"chain of {sizes.get('chain')}, {sizes.get('leaves')} leaves"
    )


def render_text(doc: dict[str, Any]) -> str:
    """An aligned plain-text table plus notes."""
    header, rows = table_rows(doc)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        out += [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(out).rstrip()

    parts = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    notes = _footnotes(doc)
    if notes:
        parts.append("")
        parts += notes
    return "\n".join(parts)


def render_markdown(doc: dict[str, Any]) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned) plus notes."""
    header, rows = table_rows(doc)
    align = ["---", "---", *("---:" for _ in header[2:])]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = [line(header), line(align), *(line(r) for r in rows)]
    notes = _footnotes(doc)
    if notes:
        parts.append("")
        parts += [f"- {n}" for n in notes]
    return "\n".join(parts)
