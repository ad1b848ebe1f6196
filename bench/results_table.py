"""The benchmark's Markdown table: one row per configuration, medians with their spread.

``bench/run.py`` prints it and stores it in its results JSON, where ``bench/readme_table.py``
finds it for the README.
"""

from __future__ import annotations


def _range(d: dict | None, fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of a :func:`spread`, or the one value when all agree."""
    if not isinstance(d, dict) or d.get("median") is None:
        return "-"
    med, lo, hi = (fmt.format(d[k]) for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _met(r: dict) -> str:
    if "met" not in r:
        return ""
    met = ("yes" if r["met"] else "no") + (f", {r['met_runs']} runs" if r.get("met_runs") else "")
    return met + (f" ({len(r['errors'])} failed)" if r.get("errors") else "")


def _accuracy(r: dict) -> str:
    if r.get("images_per_second"):
        acc = f"{r['images_per_second']:,} images/s"
        if r.get("images_per_second_min"):
            acc += f" ({r['images_per_second_min']:,}-{r['images_per_second_max']:,})"
        if r.get("bf16_autocast_images_per_second"):
            acc += f"; bf16 autocast: {r['bf16_autocast_images_per_second']:,}"
        return acc
    if r.get("accuracy_mean") is None:
        return "-"
    acc = f"{r['accuracy_mean']:.2f} ± {r['accuracy_sd']:.2f}"
    return acc + (f" ({r['accuracy_min']:.2f}-{r['accuracy_max']:.2f})" if r["seeds"] > 1 else "")


def markdown(rows: list[dict], meta: dict) -> str:
    head = (
        "| configuration | runs | test accuracy % (mean ± sd, min-max) | train s (median, min-max) "
        "| wall s (median, min-max) | ratio | peak RSS MB | load after | goal | met |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | - | skipped: {r['skipped']} | | | | | | {r.get('goal', '')} | |")
            continue
        secs = _range(r.get("train_seconds"))
        if secs == "-" and r.get("train_seconds_mean") is not None:  # rows written by other helpers' code
            secs = f"{r['train_seconds_mean']:.2f}"
        rat = f"{r['ratio']:.3f}x" if r.get("ratio") is not None else ""
        if r.get("ratio_train_seconds") is not None:
            rat += f" (train s: {r['ratio_train_seconds']:.3f}x)"
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        load = f"{r['load_after']:.1f}" if r.get("load_after") is not None else ""
        lines.append(
            f"| {r['name']} | {r['seeds']} | {_accuracy(r)} | {secs} | {_range(r.get('wall_seconds'))} | {rat} "
            f"| {rss} | {load} | {r.get('goal', '')} | {_met(r)} |"
        )
    forced = (
        " **Started with --force on a busy machine: the timings are not comparable.**" if meta.get("forced") else ""
    )
    note = (
        f"\n{meta['host']}, {meta['cpu']} ({meta['cpu_count']} cores, torch threads: {meta['threads']}), "
        f"torch {meta['torch']}, {meta['date']}; load average (1 min) {meta['load_before'][0]:.1f} before, "
        f"{meta['load_after'][0]:.1f} after; {'quick' if meta['quick'] else 'full'} run "
        f"({meta['epochs']} epochs for the tutorial rows). Ratios are medians against the reference row above, "
        f"measured in the same run, alternating (the tutorial row: whole process against whole process). "
        f"Time goals hold on the median run; 'k/n runs' says how many runs met the goal on their own.{forced}"
    )
    return "\n".join(lines) + "\n" + note
