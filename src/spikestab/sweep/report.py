"""``spikestab sweep-report``: every setting of a sweep (mean ± std over seeds), the best one (or the
settings tied with it: identical results, or not separated by a test over the seeds), and the objective
against each swept option, as JSON, Markdown and PNG under ``DIR/report/``.

``seed``, when swept, is the replicate axis: a setting is the other swept values, its trials the seeds.
Each grid point counts once: its first COMPLETE trial (a trial failed because its worker died, then
rerun, counts as the rerun). The value of a trial is the validation metric of its run's best-val
epoch (``results.json`` ``val.accuracy``, or ``val.perplexity`` for language tasks).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import stats
from ..files import atomic_write_json, atomic_write_text, json_safe
from . import space as sp
from .storage import DB_NAME, default_url, masked, open_storage
from .study import SPEC_ATTR, SWEEP_JSON

REPLICATE = "seed"


def _stat_text(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "") + f" (n={n})"


def collect(study: optuna.Study) -> dict:
    """The sweep's settings, best setting and trial counts, from the study alone (no files read)."""
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        raise ValueError(f"study {study.study_name!r} was not made by spikestab sweep")
    spec = sp.migrate_spec(stored)  # an old sweep's option names read as the current ones
    grid, names = spec.get("grid"), list(spec.get("grid") or spec.get("space") or {})
    replicate = REPLICATE if grid and REPLICATE in names else None
    axes = [n for n in names if n != replicate]
    points, unsampled = _points(study)
    counts = {
        "points": spec["trials"],
        "complete": 0,
        "pruned": 0,
        "failed": 0,
        **unsampled,
        "retried": 0,
        "duplicates": 0,
    }
    settings: dict[str, dict] = {}
    for members in points.values():
        _add_point(settings, counts, sorted(members, key=lambda t: t.number), axes, replicate)
    ordered = _ordered(list(settings.values()), {n: grid[n] for n in axes} if grid else None)
    for setting in ordered:
        _summarise(setting)
    scored = [s for s in ordered if s["n"]]
    sign = -1.0 if spec["direction"] == "maximize" else 1.0
    best = min(scored, key=lambda s: sign * s["mean"]) if scored else None
    ties = [t for s in scored if s is not best and (t := tie(best, s)) is not None] if best else []
    return {
        "study": study.study_name,
        "objective": spec["objective"],
        "direction": spec["direction"],
        "swept": names,
        "replicate": replicate,
        "axes": axes,
        "sampler": spec["sampler"],
        "settings": ordered,
        "best": best,
        "ties": ties,
        "counts": counts,
        "spec": spec,
    }


Trial = optuna.trial.FrozenTrial
TIE_P = 0.05  # a setting whose difference from the best has p >= TIE_P is not separated from it


def tie(best: dict, other: dict) -> dict | None:
    """``other`` as a tie of ``best`` ({"label", "why"}), or None when the results separate them: a tie when
    both gave identical values (seed by seed when seeds were swept), or, with two or more seeds each, when
    the test of their difference (paired t over shared seeds, else Welch t; ``spikestab.stats``) has
    p >= ``TIE_P``."""
    a = {t["seed"]: t["value"] for t in best["trials"]}
    b = {t["seed"]: t["value"] for t in other["trials"]}
    same = a == b if None not in a else sorted(a.values()) == sorted(b.values())
    if same or [t["value"] for t in best["trials"]] == [t["value"] for t in other["trials"]]:
        return {"label": other["label"], "why": "identical results"}
    if min(len(a), len(b)) < 2:
        return None
    try:
        shared = sorted(a) if set(a) == set(b) and None not in a else None
        d = (
            stats.paired([a[k] for k in shared], [b[k] for k in shared])
            if shared
            else stats.welch(list(a.values()), list(b.values()))
        )
    except ValueError:  # a non-finite value: no test
        return None
    if d.p < TIE_P:
        return None
    return {"label": other["label"], "why": f"not separated ({d.test}, {stats.format_p(d.p)})"}


def _points(study: optuna.Study) -> tuple[dict[str, list[Trial]], dict[str, int]]:
    """The trials of each sampled point (by its parameters), and the search slots not yet sampled
    (waiting / running)."""
    points: dict[str, list[Trial]] = {}
    unsampled = {"waiting": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        params = sp.trial_params(t)
        if params:
            points.setdefault(sp.params_key(params), []).append(t)
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            unsampled["waiting" if t.state == TrialState.WAITING else "running"] += 1
    return points, unsampled


def _outcome(members: list[Trial]) -> str:
    """A point's outcome: complete (some trial completed), else running, waiting, pruned or failed."""
    states = {t.state for t in members}
    for state, outcome in (
        (TrialState.COMPLETE, "complete"),
        (TrialState.RUNNING, "running"),
        (TrialState.WAITING, "waiting"),
        (TrialState.PRUNED, "pruned"),
    ):
        if state in states:
            return outcome
    return "failed"


def _add_point(
    settings: dict[str, dict], counts: dict[str, int], members: list[Trial], axes: list[str], replicate: str | None
) -> None:
    """Count a point's trials and add its completed one (if any) to its setting (the point less the
    replicate axis)."""
    params = sp.trial_params(members[0])
    done = [t for t in members if t.state == TrialState.COMPLETE]
    outcome = _outcome(members)
    counts[outcome] += 1
    counts["duplicates"] += max(len(done) - 1, 0)
    if outcome != "failed":
        counts["retried"] += sum(1 for t in members if t.state == TrialState.FAIL)
    setting = {n: params.get(n) for n in axes}
    s = settings.setdefault(
        sp.params_key(setting), {"params": setting, "trials": [], "pruned": 0, "failed": 0, "pending": 0}
    )
    if not done:
        s[outcome if outcome in ("pruned", "failed") else "pending"] += 1
        return
    t = done[0]
    s["trials"].append(
        {
            "trial": t.number,
            "seed": params.get(replicate) if replicate else None,
            "value": t.value,
            "run_dir": t.user_attrs.get("run_dir"),
            **{k: v for k, v in t.user_attrs.get("result", {}).items() if k.startswith("test_")},
            "resumed_from_step": t.user_attrs.get("resumed_from_step", 0),
        }
    )


def _ordered(settings: list[dict], grid: dict | None) -> list[dict]:
    """Settings in grid order (a grid sweep), else in the order their first trial ran."""
    if grid is not None:
        order = {sp.params_key(p): i for i, p in enumerate(sp.grid_points(grid))}
        return sorted(settings, key=lambda s: order.get(sp.params_key(s["params"]), len(order)))
    return sorted(settings, key=lambda s: min([t["trial"] for t in s["trials"]] or [10**9]))


def _summarise(s: dict) -> None:
    """A setting's count, mean and standard deviation of the objective, label and text."""
    values = [t["value"] for t in s["trials"]]
    s["n"] = len(values)
    s["mean"] = statistics.fmean(values) if values else None
    s["std"] = statistics.stdev(values) if len(values) > 1 else None
    s["label"] = sp.describe(s["params"])
    s["text"] = _stat_text(s["mean"], s["std"], s["n"])


def parse_refs(items: Sequence[str] | None) -> list[dict]:
    """``NAME=VALUE[:label]`` -> {"name", "value", "label"} (VALUE a number when it reads as one)."""
    refs = []
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep or not rest:
            raise ValueError(f"--ref takes NAME=VALUE[:label], got {item!r}")
        value_text, _, label = rest.partition(":")
        try:
            value: Any = float(value_text)
        except ValueError:
            value = value_text
        try:
            refs.append({"name": sp.canonical(name), "value": value, "label": label or f"{name}={value_text}"})
        except ValueError as err:
            raise ValueError(f"--ref {item!r}: {err}") from None
    return refs


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _figure(data: dict, axis: str, refs: list[dict], path: Path) -> Path:
    """The objective against swept option ``axis`` (one series per setting of the other axes of a grid),
    with the reference lines ``refs`` that name ``axis``."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    grid = data["spec"].get("grid")
    levels = grid[axis] if grid else data["spec"]["space"][axis].get("choices")
    numeric = _plot_grid(ax, data, axis, grid[axis]) if grid else _plot_space(ax, data, axis)
    for i, ref in enumerate(r for r in refs if r["name"] == axis):
        at = ref["value"]
        if not numeric:
            labels = [sp.fmt_value(v) for v in levels]
            if str(at) not in labels:
                continue
            at = labels.index(str(at))
        ax.axvline(at, ls="--", lw=1.2, color=f"C{(i + 3) % 10}", label=ref["label"])
    word = data["objective"].removeprefix("val_")
    ax.set(
        xlabel=axis,
        ylabel=f"validation {word} (best-val epoch)",
        title=f"{data['study']}: {word} vs {axis}"
        + (f" (mean ± std over {data['replicate']})" if data["replicate"] else ""),
    )
    if word == "perplexity":
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_grid(ax: Any, data: dict, axis: str, levels: list) -> bool:
    """A grid's mean ± std per level of ``axis``, one series per setting of the other axes (categories
    side by side, unconnected); returns whether the levels are numeric."""
    numeric = _numeric(levels)
    others = [n for n in data["axes"] if n != axis]
    pos = {sp.params_key({"v": v}): (v if numeric else i) for i, v in enumerate(levels)}
    series: dict[str, list[dict]] = {}
    for s in data["settings"]:
        series.setdefault(sp.describe({n: s["params"][n] for n in others}) if others else "", []).append(s)
    for i, (label, members) in enumerate(series.items()):
        members = [m for m in members if m["n"]]
        members.sort(key=lambda m: levels.index(m["params"][axis]))
        shift = 0.0 if numeric else 0.08 * (i - (len(series) - 1) / 2)
        x = [pos[sp.params_key({"v": m["params"][axis]})] + shift for m in members]
        y = [m["mean"] for m in members]
        err = [m["std"] or 0.0 for m in members]
        ax.errorbar(x, y, yerr=err, fmt="o-" if numeric else "o", capsize=3, label=label or None)
    if not numeric:
        ax.set_xticks(range(len(levels)), [sp.fmt_value(v) for v in levels])
    elif min(levels) > 0 and max(levels) / min(levels) >= 20:
        ax.set_xscale("log")
    return numeric


def _plot_space(ax: Any, data: dict, axis: str) -> bool:
    """A search's settings as points against ``axis``; returns whether the axis is numeric."""
    dim = data["spec"]["space"][axis]
    xs = [s["params"][axis] for s in data["settings"] if s["n"]]
    ys = [s["mean"] for s in data["settings"] if s["n"]]
    numeric = "choices" not in dim or _numeric(dim["choices"])
    if numeric:
        ax.scatter(xs, ys, s=18)
        if dim.get("log"):
            ax.set_xscale("log")
    else:
        levels = dim["choices"]
        ax.scatter([levels.index(v) for v in xs], ys, s=18)
        ax.set_xticks(range(len(levels)), [str(v) for v in levels])
    return numeric


def _markdown(data: dict, figures: list[Path]) -> str:
    c, metric = data["counts"], data["objective"]
    word = metric.removeprefix("val_")
    how = "maximised" if data["direction"] == "maximize" else "minimised"
    rep = (
        f"mean ± sample std over `{data['replicate']}` (n = trials counted)" if data["replicate"] else "one trial each"
    )
    lines = [
        f"# Sweep report: {data['study']}",
        "",
        f"Objective: validation {word} of each run's best-val epoch (`results.json` `val.{word}`), {how}; {rep}.",
        "",
        f"Trials: {c['points']} points: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, "
        f"{c['running']} running, {c['waiting']} waiting; {c['retried']} failed attempts rerun"
        + (f"; {c['duplicates']} DUPLICATE completions ignored" if c["duplicates"] else "")
        + ".",
        "",
    ]
    axes = data["axes"]
    head = axes + ["n", metric] + (["per seed"] if data["replicate"] else ["trial"]) + ["pruned / failed / pending"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in data["settings"]:
        cells = [sp.fmt_value(s["params"][a]) for a in axes] + [str(s["n"]), s["text"].split(" (n=")[0]]
        if data["replicate"]:
            cells.append(", ".join(f"{t['seed']}: {t['value']:.4f}" for t in s["trials"]) or "-")
        else:
            cells.append(", ".join(str(t["trial"]) for t in s["trials"]) or "-")
        cells.append(f"{s['pruned']} / {s['failed']} / {s['pending']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _best_line(data, metric), ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def verdict(data: dict, metric: str) -> str:
    """The sweep's verdict in words: the best setting, or a tie named as one (``tie``)."""
    best, ties = data["best"], data["ties"]
    if best is None:
        return "Best: no complete trial yet"
    scored = [s for s in data["settings"] if s["n"]]
    if len(scored) > 1 and len(ties) == len(scored) - 1 and all(t["why"] == "identical results" for t in ties):
        return f"No best: all {len(scored)} settings gave identical results ({metric} {best['text']})"
    if ties:
        tied = "; ".join(f"{t['label']} ({t['why']})" for t in ties)
        return f"Best by mean, tied: {best['label']}: {metric} {best['text']}; tied with {tied}"
    return f"Best: {best['label']}: {metric} {best['text']}"


def _best_line(data: dict, metric: str) -> str:
    """The verdict as the report's Markdown line (its head in bold)."""
    head, _, rest = verdict(data, metric).partition(": ")
    return f"**{head}:** {rest}"


def _locate(out: Path, storage: str | None, study_name: str | None) -> tuple[str, str]:
    meta = json.loads((out / SWEEP_JSON).read_text()) if (out / SWEEP_JSON).is_file() else {}
    name = study_name or meta.get("study") or out.resolve().name
    if storage:
        return storage, name
    if (out / DB_NAME).is_file():
        return default_url(out), name
    saved = meta.get("storage")
    if saved and "***" not in saved:
        return saved, name
    raise ValueError(f"no {DB_NAME} in {str(out)!r} and no usable storage in its {SWEEP_JSON}: pass --storage URL")


def report(
    out: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    refs: Sequence[str] | None = None,
    write: bool = True,
) -> dict:
    """Summarise the sweep of ``out`` (its ``sweep.db``, or ``storage``): :func:`collect` plus figure paths;
    with ``write`` also ``out/report/report.json``, ``report.md`` and one PNG per swept option.
    ``refs``: ``["dampening=0.3:predicted", ...]`` vertical reference lines on that option's figure."""
    out = Path(out)
    url, name = _locate(out, storage, study_name)
    st = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        raise ValueError(f"no study {name!r} in {masked(url)}; it holds {names}; pass --study") from None
    data = collect(study)
    parsed = parse_refs(refs)
    for ref in parsed:
        if ref["name"] not in data["axes"]:
            raise ValueError(f"--ref {ref['name']}: not a swept option of this sweep (swept: {data['axes']})")
    data["refs"] = parsed
    data["storage"] = masked(url)
    figures: list[Path] = []
    if write:
        folder = out / "report"
        folder.mkdir(parents=True, exist_ok=True)  # also when only seeds were swept (no figure)
        for axis in data["axes"]:
            safe = re.sub(r"[^A-Za-z0-9._-]", "-", axis)
            figures.append(_figure(data, axis, parsed, folder / f"{data['objective']}_vs_{safe}.png"))
        data["figures"] = [str(p) for p in figures]
        atomic_write_text(_markdown(data, figures), folder / "report.md")
        atomic_write_json(json_safe(data), folder / "report.json")
        data["markdown"] = str(folder / "report.md")
        data["json"] = str(folder / "report.json")
    return data
