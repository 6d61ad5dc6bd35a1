"""Compare two groups of migrations: metrics per migration, the Mann-Whitney U test, --fail-on rules.

Each input (recording, trace, run directory) is one run; every migration in it is one
sample. A group's value for a metric is the median of its samples. With at least
``MIN_SAMPLES`` samples a group, the two-sided Mann-Whitney U test decides whether a
difference is significant (benchstat, Google benchmark's compare.py); with fewer, the
difference is shown and the samples are said to be too few. Pure: groups in, a
``Comparison`` out. A group is made from reports (``make_group``; loading is
``pipeline.load_runs``) or from a fleet dataset's rows (``profiler.dataset.groups``, which
holds metrics, not Migration objects: a ``Sample`` carries only what compare and its views
read); rendering is ``views.compare``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.errors import MigprofError
from profiler.model.results import Check, Migration, Report

MIN_SAMPLES = 5
ALPHA = 0.05
DEFAULT_DEVICE_KINDS = ("ram", "vfio")
# metrics a kernel-view migration (BPF alone) does not have: the kernel sees no dirty
# syncs, and its checks are PRECOPY_INFO calls, not QEMU's convergence checks
KERNEL_VIEW_LACKS = ("dirty_syncs", "checks")


# ---------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class MetricDef:
    unit: str  # ms, bytes, count, bytes/s
    lower_is_better: bool
    doc: str


# metric name -> definition; device metrics are "device.<name>.<field>"
METRICS: dict[str, MetricDef] = {
    "total_ms": MetricDef("ms", True, "total migration time"),
    "setup_ms": MetricDef("ms", True, "setup phase"),
    "downtime_ms": MetricDef("ms", True, "guest downtime"),
    "stopcopy_ms": MetricDef("ms", True, "stop-and-copy on the source"),
    "dirty_syncs": MetricDef("count", True, "dirty-bitmap syncs (QEMU dirty-sync-count)"),
    "checks": MetricDef("count", True, "convergence checks made"),
    "checks_to_converge": MetricDef("count", True, "checks until pending fell below the threshold"),
    "transferred_bytes": MetricDef("bytes", True, "bytes sent"),
    "bandwidth_bytes_per_s": MetricDef("bytes/s", False, "mean bandwidth (sent / total time)"),
    "read_ms": MetricDef("ms", True, "time in VFIO data_fd read(), all devices"),
}
# Device fields, named as on ``results.Device``.
DEVICE_METRICS: dict[str, MetricDef] = {
    "downtime_ms": MetricDef("ms", True, "vmstate save time in downtime"),
    "load_ms": MetricDef("ms", True, "vmstate load time on the destination"),
    "precopy_bytes": MetricDef("bytes", True, "bytes sent in pre-copy"),
    "stopcopy_bytes": MetricDef("bytes", True, "bytes sent in stop-and-copy"),
    "read_ms": MetricDef("ms", True, "time in data_fd read()"),
}


def metric_def(name: str) -> MetricDef | None:
    if name in METRICS:
        return METRICS[name]
    if name.startswith("device."):
        return DEVICE_METRICS.get(name.rsplit(".", 1)[-1])
    return None


def _num(v: Any) -> float | None:
    """A finite float, or None (missing, NaN and inf all mean the input had no value)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def migration_metrics(m: Migration, device_kinds: Iterable[str] | None = DEFAULT_DEVICE_KINDS
                      ) -> dict[str, float]:
    """Every metric one migration carries.

    Missing values are left out, not zero. Per-device metrics cover the device kinds
    given (RAM and VFIO by default; None for every device QEMU names).
    """
    out: dict[str, float | None] = {
        "total_ms": _num(m.total_ms),
        "setup_ms": _num(m.setup_ms),
        "downtime_ms": _num(m.downtime_ms),
        "stopcopy_ms": _num(m.stopcopy_ms),
        "dirty_syncs": _num(m.dirty_syncs),
        "checks": float(len(m.checks)) if m.checks else None,
        "transferred_bytes": _num(m.transferred_bytes),
    }
    if m.view == "kernel":
        for k in KERNEL_VIEW_LACKS:
            out[k] = None
    at = _num(m.verdict.converged_at_check)
    out["checks_to_converge"] = at + 1 if at is not None else None
    sent, total = out["transferred_bytes"], out["total_ms"]
    if sent is not None and total:
        out["bandwidth_bytes_per_s"] = sent / (total / 1000.0)
    else:
        out["bandwidth_bytes_per_s"] = _num(m.verdict.bandwidth_bytes_per_s)
    kinds = set(device_kinds) if device_kinds is not None else None
    reads = []
    for d in m.devices:
        if not d.name:
            continue
        take = kinds is None or d.kind in kinds
        for f in DEVICE_METRICS:
            val = _num(getattr(d, f))
            if val is None:
                continue
            if f == "read_ms":
                reads.append(val)
            if take:
                out[f"device.{d.name}.{f}"] = val
    if reads:
        out["read_ms"] = float(sum(reads))
    return {k: val for k, val in out.items() if val is not None}


# ---------------------------------------------------------------------------- runs and groups


@dataclass(frozen=True, slots=True)
class Run:
    """One input: its report, and what its recording said about itself."""

    input: str
    report: Report
    qemu_version: str | None = None  # the exact version its metadata names (QMP greeting, run.json)
    schema_version: int | None = None  # the recording's stored schema version (None: not a recording)
    from_summary: bool = False  # the report is the recording's stored summary

    @property
    def qemu_versions(self) -> set[str]:
        """The exact version when known, else the model's trace era of each migration."""
        if self.qemu_version:
            return {self.qemu_version}
        return {m.qemu_version for m in self.report.migrations if m.qemu_version}


@dataclass(frozen=True, slots=True)
class Sample:
    """One migration taken as a sample: the input that holds it (an index into its group's
    ``inputs``) and its index there, its metrics, the view it was seen through
    (``Migration.view``) and its convergence checks (the curve the HTML page draws)."""

    input: int
    index: int
    metrics: dict[str, float]
    view: str = "qemu"
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class Selection:
    """How a group was drawn from a fleet dataset: the migrations matching ``where`` whose
    ``by`` column is ``key`` (None: null, e.g. no VFIO device)."""

    dataset: str
    by: str
    key: str | None
    where: str | None = None

    @property
    def text(self) -> str:
        """``qemu_version=7.2.22 where host <> 'hv2'``."""
        w = f" where {self.where.strip()}" if self.where and self.where.strip() else ""
        return f"{self.by}={'(none)' if self.key is None else self.key}{w}"


@dataclass(frozen=True, slots=True)
class Group:
    """One side of a comparison: the migrations taken, and what they came from.

    ``inputs`` are the runs: files given on the command line, or a dataset's recording ids
    (then ``selection`` says how the group was drawn, and ``hosts`` where it ran).
    """

    label: str
    inputs: tuple[str, ...]
    samples: tuple[Sample, ...]
    outcomes: dict[str, int]  # outcome -> migrations, over every migration of the inputs
    qemu_versions: tuple[str, ...] = ()
    schema_versions: tuple[int, ...] = ()  # stored event schema versions of the recordings
    hosts: tuple[str, ...] = ()
    from_summary: int = 0  # inputs whose report was the recording's stored summary
    selection: Selection | None = None  # a dataset group's; None for inputs given as files
    note: str | None = None

    @property
    def kernel_view(self) -> int:
        """Samples that only the kernel saw (``Migration.view == "kernel"``)."""
        return sum(1 for s in self.samples if s.view == "kernel")

    def values(self, metric: str) -> list[float]:
        return [s.metrics[metric] for s in self.samples if metric in s.metrics]


def make_group(label: str, runs: Sequence[Run], outcome: str = "completed",
               device_kinds: Iterable[str] | None = DEFAULT_DEVICE_KINDS) -> Group:
    """Take the migrations of ``runs`` whose outcome matches (``all`` takes every one).

    When no migration in a group completed (e.g. comparing runs that never converge),
    every migration is taken and the group says so.
    """
    every = [(i, m) for i, r in enumerate(runs) for m in r.report.migrations]
    counts: dict[str, int] = {}
    for _, m in every:
        counts[m.outcome] = counts.get(m.outcome, 0) + 1
    note = None
    taken = every if outcome == "all" else [(i, m) for i, m in every if m.outcome == outcome]
    if not taken and every:
        taken = every
        note = f"no {outcome} migration; compared all {len(every)} migrations"
    kinds = tuple(device_kinds) if device_kinds is not None else None
    samples = tuple(Sample(i, m.index, migration_metrics(m, kinds), m.view, m.checks) for i, m in taken)
    return Group(label, tuple(r.input for r in runs), samples, counts,
                 qemu_versions=tuple(sorted({v for r in runs for v in r.qemu_versions})),
                 schema_versions=tuple(sorted({r.schema_version for r in runs
                                               if r.schema_version is not None})),
                 from_summary=sum(1 for r in runs if r.from_summary), note=note)


# ---------------------------------------------------------------------------- rules

_RULE = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_.*?:\[\]<>/ -]+?)\s*:\s*(?P<sign>[+-]?)\s*"
                   r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<pct>%?)\s*$")


@dataclass(frozen=True, slots=True)
class Rule:
    """``metric:+10%`` fails when the candidate's median rises more than 10 % over the
    base's; ``metric:+500`` when it rises more than 500 (the metric's unit); ``-``
    watches for a fall. With no sign, the direction that is worse for the metric."""

    text: str
    metric: str  # a name or an fnmatch pattern (device.*.downtime_ms)
    sign: int  # +1 rise is bad, -1 fall is bad, 0 the metric's worse direction
    amount: float
    percent: bool

    def direction(self, name: str) -> int:
        if self.sign:
            return self.sign
        d = metric_def(name)
        return 1 if d is None or d.lower_is_better else -1


def parse_rule(text: str) -> Rule:
    """Parse a ``--fail-on`` rule; raises MigprofError naming what is wrong."""
    m = _RULE.match(text)
    if not m:
        raise MigprofError(f"--fail-on {text!r}: expected METRIC:+N%, METRIC:-N% or METRIC:+N "
                           "(e.g. 'downtime_ms:+10%', 'total_ms:+500')")
    metric = m["metric"].strip()
    has_glob = any(c in metric for c in "*?[")
    if not has_glob and metric_def(metric) is None:
        raise MigprofError(f"--fail-on {text!r}: unknown metric {metric!r}; known: "
                           + ", ".join(sorted(METRICS)) + ", device.<name>.{"
                           + ",".join(DEVICE_METRICS) + "}")
    sign = {"+": 1, "-": -1, "": 0}[m["sign"]]
    return Rule(text.strip(), metric, sign, float(m["num"]), bool(m["pct"]))


# ---------------------------------------------------------------------------- comparison


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    median: float | None
    mean: float | None
    min: float | None
    max: float | None
    values: tuple[float, ...]

    @staticmethod
    def of(values: Sequence[float]) -> Stats:
        if not values:
            return Stats(0, None, None, None, None, ())
        a = np.asarray(values, dtype=float)
        return Stats(len(a), float(np.median(a)), float(a.mean()), float(a.min()), float(a.max()),
                     tuple(float(x) for x in a))


@dataclass(frozen=True, slots=True)
class MetricResult:
    name: str
    unit: str
    lower_is_better: bool
    base: Stats
    candidate: Stats
    delta: float | None  # candidate median - base median
    delta_pct: float | None  # delta / |base median| * 100
    p_value: float | None
    significant: bool | None  # None: too few samples to test
    note: str = ""

    @property
    def worse(self) -> bool | None:
        if self.delta is None or self.delta == 0:
            return None if self.delta is None else False
        return (self.delta > 0) == self.lower_is_better


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A metric only one group has (e.g. per-device downtime, which QEMU 7.2 does not trace)."""

    metric: str
    only_in: str  # base | candidate
    n: int  # samples that have it
    reason: str


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    metric: str
    fired: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Comparison:
    base: Group
    candidate: Group
    metrics: tuple[MetricResult, ...]
    left_out: tuple[LeftOut, ...]
    rules: tuple[RuleResult, ...]
    alpha: float
    min_samples: int
    warnings: tuple[str, ...] = ()

    @property
    def regression(self) -> bool:
        return any(r.fired for r in self.rules)

    @property
    def too_few(self) -> bool:
        return len(self.base.samples) < self.min_samples or len(self.candidate.samples) < self.min_samples


def _exact_sf(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under the null for sample sizes n1, n2 (no ties): count arrangements."""
    n1, n2 = min(n1, n2), max(n1, n2)  # the null distribution depends on the pair only
    # ways[m][k]: orderings of m x's among the y's with U = k, built up one y at a time
    ways = np.zeros((n1 + 1, n1 * n2 + 1), dtype=np.float64)
    ways[:, 0] = 1.0
    for _j in range(1, n2 + 1):
        nxt = np.zeros_like(ways)
        nxt[0, 0] = 1.0
        for m in range(1, n1 + 1):
            # the largest value is a y (adds m to U) or an x (adds nothing)
            nxt[m, m:] += ways[m, : n1 * n2 + 1 - m]
            nxt[m] += nxt[m - 1]
        ways = nxt
    counts = ways[n1]
    return float(counts[u:].sum() / counts.sum())


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of ``a``, p-value).

    Same method as ``scipy.stats.mannwhitneyu(method="auto")``: the exact distribution
    when a side has at most 8 values and there are no ties, else the normal
    approximation with tie and continuity correction (tests check it against scipy).
    Written out here because importing scipy.stats alone costs most of a second.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    allv = np.concatenate([x, y])
    order = np.argsort(allv, kind="mergesort")
    sv = allv[order]
    # average ranks of tied groups
    starts = np.r_[0, np.flatnonzero(np.diff(sv)) + 1]
    ends = np.r_[starts[1:], len(sv)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(sv))
    ranks[order] = np.repeat(avg, ends - starts)
    t = (ends - starts).astype(float)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    u = max(u1, n1 * n2 - u1)
    if (n1 <= 8 or n2 <= 8) and not (t > 1).any():
        p = 2.0 * _exact_sf(int(round(u)), n1, n2)
    else:
        n = n1 + n2
        s = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - float((t**3 - t).sum()) / (n * (n - 1))))
        if s == 0:
            return u1, 1.0
        z = (u - n1 * n2 / 2.0 - 0.5) / s
        p = 2.0 * 0.5 * math.erfc(z / math.sqrt(2.0))
    return u1, min(max(p, 0.0), 1.0)


def _u_test(a: Sequence[float], b: Sequence[float]) -> float:
    if len(set(a)) == 1 and set(a) == set(b):
        return 1.0  # identical constants: no difference at all
    return mann_whitney_u(a, b)[1]


def _metric_order(name: str) -> tuple[int, str]:
    top = list(METRICS)
    if name in METRICS:
        return (top.index(name), "")
    dev, _, f = name[len("device."):].rpartition(".")
    return (len(top) + list(DEVICE_METRICS).index(f) if f in DEVICE_METRICS else 99, dev)


def compare(base: Group, cand: Group, rules: Iterable[Rule] = (), *, alpha: float = ALPHA,
            min_samples: int = MIN_SAMPLES) -> Comparison:
    """Compare two groups metric by metric, and evaluate the rules."""
    names_b = {k for s in base.samples for k in s.metrics}
    names_c = {k for s in cand.samples for k in s.metrics}
    both = sorted(names_b & names_c, key=_metric_order)
    left_out = []
    for name, only in [(n, "base") for n in names_b - names_c] + [(n, "candidate") for n in names_c - names_b]:
        group, other = (base, cand) if only == "base" else (cand, base)
        why = f"the {'candidate' if only == 'base' else 'base'} side has no value"
        if other.qemu_versions:
            why += f" (QEMU {', '.join(other.qemu_versions)})"
        left_out.append(LeftOut(name, only, len(group.values(name)), why))
    left_out.sort(key=lambda d: _metric_order(d.metric))
    enough = len(base.samples) >= min_samples and len(cand.samples) >= min_samples
    results = []
    for name in both:
        a, b = base.values(name), cand.values(name)
        d = metric_def(name) or MetricDef("", True, "")
        sa, sb = Stats.of(a), Stats.of(b)
        delta = sb.median - sa.median if sa.median is not None and sb.median is not None else None
        pct = None
        if delta is not None and sa.median:
            pct = delta / abs(sa.median) * 100.0
        elif delta == 0:
            pct = 0.0
        p = sig = None
        note = ""
        if len(a) >= min_samples and len(b) >= min_samples:
            p = _u_test(a, b)
            sig = p < alpha
        else:
            note = f"too few samples (n={len(a)}/{len(b)}; {min_samples} a side needed for the U test)"
        results.append(MetricResult(name, d.unit, d.lower_is_better, sa, sb, delta, pct, p, sig, note))
    rule_results = [r for rule in rules for r in _apply_rule(rule, results, left_out)]
    warnings = []
    if not enough:
        warnings.append(f"too few samples for a significance test (base {len(base.samples)}, "
                        f"candidate {len(cand.samples)}; {min_samples} a side needed): "
                        "differences are shown without a verdict on significance")
    if left_out:
        warnings.append("left out, only one side has them: " + left_out_text(left_out))
    return Comparison(base, cand, tuple(results), tuple(left_out), tuple(rule_results),
                      alpha, min_samples, tuple(warnings))


def left_out_text(left_out: Sequence[LeftOut]) -> str:
    """Left-out metrics in a few words: device metrics grouped by field."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for d in left_out:
        if d.metric.startswith("device."):
            dev, _, f = d.metric[len("device."):].rpartition(".")
            key = (d.only_in, f"device.*.{f}", d.reason)
        else:
            dev, key = "", (d.only_in, d.metric, d.reason)
        groups.setdefault(key, []).append(dev)
    parts = []
    for (only, name, reason), devs in groups.items():
        what = name
        if name.startswith("device.*"):
            shown = ", ".join(devs[:3]) + (f" +{len(devs) - 3}" if len(devs) > 3 else "")
            what = f"{name} ({len(devs)} device(s): {shown})"
        parts.append(f"{what} only in {only}: {reason}")
    return "; ".join(parts)


def _apply_rule(rule: Rule, results: list[MetricResult], left_out: list[LeftOut]) -> list[RuleResult]:
    hits = [r for r in results if fnmatch.fnmatchcase(r.name, rule.metric)]
    if not hits:
        missing = [d.metric for d in left_out if fnmatch.fnmatchcase(d.metric, rule.metric)]
        why = (f"not evaluated: {', '.join(missing)} only on one side" if missing
               else "not evaluated: no such metric in these runs")
        return [RuleResult(rule.text, rule.metric, False, why)]
    out = []
    for r in hits:
        if r.delta is None:
            out.append(RuleResult(rule.text, r.name, False, "not evaluated: no value"))
            continue
        direction = rule.direction(r.name)
        if rule.percent:
            if r.base.median:
                change = r.delta / abs(r.base.median) * 100.0
            else:
                change = math.inf if r.delta else 0.0
            shown = f"{change:+.1f}%"
        else:
            change = r.delta
            shown = f"{change:+.6g} {r.unit}".rstrip()
        over = change * direction > rule.amount
        if over and r.significant is False:
            out.append(RuleResult(rule.text, r.name, False,
                                  f"{shown}, over the limit but not significant (p={r.p_value:.3f})"))
            continue
        detail = f"{shown} (limit {'+' if direction > 0 else '-'}{rule.amount:g}{'%' if rule.percent else ''})"
        if over and r.significant is None:
            detail += "; too few samples to test significance"
        elif r.p_value is not None:
            detail += f"; p={r.p_value:.3g}"
        out.append(RuleResult(rule.text, r.name, over, detail))
    return out
