"""`migprof compare`: compare migrations run against run (BASE... -- CAND...)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from profiler.commands.options import check_output
from profiler.errors import EXIT_OK, EXIT_REGRESSION, MigprofError

EXAMPLES = """examples:
    migprof compare base.parquet -- cand.parquet      # one run a side
    migprof compare base/*.parquet -- cand/*.parquet   # 5+ runs a side: U test, ~ = not significant
    migprof compare a/ -- b/ --fail-on 'downtime_ms:+10%' --fail-on 'total_ms:+500'
    migprof compare old.log -- new.parquet --json      # traces, recordings, run dirs mix
    migprof compare b*.parquet -- c*.parquet --html cmp.html   # convergence curves overlaid
    migprof compare b/ -- c/ --html pages/c1.html --plotly directory   # pages share pages/plotly.min.js
    migprof compare fleet/ --by qemu_version              # a fleet dataset: its two QEMU releases
    migprof compare fleet/ --by host --base hv1 --candidate hv2 --where "date >= '2026-11-01'"
rules: METRIC:+N% (rise over N %), METRIC:-N% (fall), METRIC:+N (absolute, metric's unit);
    METRIC may be a pattern: 'device.*.downtime_ms:+20%'. Exit 0 fine, 1 regression, 2 error.
A fleet dataset (docs/dataset.md) as the only input: two groups of its migrations, split by
--by (qemu_version, host or device_driver), those matching --where (SQL on the migrations
table's columns); --base/--candidate name the groups (default: the only two there are).
"""


def _options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--fail-on", action="append", metavar="RULE", default=d([]),
                   help="fail (exit 1) when a metric gets worse by more than this; repeatable")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-j", "--json", action="store_true", default=d(False),
                     help="print JSON (migprof.compare/1)")
    out.add_argument("--markdown", action="store_true", default=d(False), help="print a Markdown table")
    p.add_argument("--html", metavar="FILE", default=d(None),
                   help="also write an HTML page with both sides' convergence curves overlaid")
    p.add_argument("--plotly", choices=("inline", "directory"), default=d("inline"),
                   help="--html's plotly.js: inside the page (default; opens offline on its own) "
                   "or one plotly.min.js beside it, shared by the pages in that directory")
    p.add_argument("--alpha", type=float, default=d(0.05), help="significance level (default 0.05)")
    p.add_argument("--outcome", choices=("completed", "all"), default=d("completed"),
                   help="which migrations are samples (default: completed ones)")
    p.add_argument("--all-devices", action="store_true", default=d(False),
                   help="per-device metrics for every device QEMU names, not only RAM and VFIO")
    p.add_argument("--no-summary", action="store_true", default=d(False),
                   help="rebuild every report from the events, ignoring stored summaries")
    p.add_argument("--jobs", type=int, default=d(0), metavar="N",
                   help="load inputs in N processes (default: one per CPU, at most 4)")
    ds = p.add_argument_group("over a fleet dataset (the only input: a dataset directory)")
    ds.add_argument("--by", choices=BY, default=d(None),
                    help="split its migrations by this column (default qemu_version)")
    ds.add_argument("--where", metavar="SQL", default=d(None),
                    help="only the migrations matching this SQL condition (migrations table)")
    ds.add_argument("--base", metavar="LABEL", default=d(None), help="the base group's value of --by")
    ds.add_argument("--candidate", metavar="LABEL", default=d(None),
                    help="the candidate group's value of --by")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="Compare migrations run against run",
                       description="Compare migrations run against run: BASE... -- CAND..., each "
                       "side one or more recordings, traces or run directories; or two groups "
                       "of a fleet dataset's migrations: DATASET --by COLUMN.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _options(p)
    # REMAINDER keeps the '--' that separates the sides (argparse would swallow it)
    p.add_argument("inputs", nargs=argparse.REMAINDER, metavar="BASE... -- CAND... | DATASET")
    return p


class _InnerParser(argparse.ArgumentParser):
    """Options given after the inputs: a bad one is one error line (exit 2), as before them."""

    def error(self, message: str):  # type: ignore[override]
        raise MigprofError(f"compare: {message}")


BY = ("qemu_version", "host", "device_driver")  # profiler.dataset.groups.BY (not imported: start-up)
DATASET_OPTIONS = ("by", "where", "base", "candidate")


@dataclass(frozen=True, slots=True)
class DatasetSides:
    """`compare DATASET`: two groups of a fleet dataset's migrations."""

    dataset: str
    by: str
    where: str | None
    base: str | None  # the groups' --by values (None: the only two groups there are)
    candidate: str | None


@dataclass(frozen=True, slots=True)
class Config:
    """What one `migprof compare` does: BASE... -- CAND..., or ``dataset``'s groups."""

    base: tuple[str, ...]
    candidate: tuple[str, ...]
    rules: tuple[str, ...]  # --fail-on texts, parsed by model.compare.parse_rule
    output: str  # terminal | json | markdown
    html: str | None
    plotly: str  # inline | directory
    alpha: float
    outcome: str  # completed | all
    all_devices: bool
    use_summary: bool
    jobs: int
    dataset: DatasetSides | None = None


def config(args: argparse.Namespace) -> Config:
    """The Config of BASE... -- CAND... or DATASET; options may also come after the inputs."""
    from profiler.pipeline import expand_runs

    rest = list(args.inputs)
    opt = _InnerParser(prog="migprof compare", add_help=False)
    _options(opt, defaults=False)
    o = {k: v for k, v in vars(args).items() if k not in ("inputs", "_run")}
    cut = rest.index("--") if "--" in rest else len(rest)
    sides = []
    for part in (rest[:cut], rest[cut + 1:]):
        ns, extra = opt.parse_known_args(part)
        for k, v in vars(ns).items():
            o[k] = [*o[k], *v] if k == "fail_on" else v
        bad = [x for x in extra if x.startswith("-") and x != "-" and not os.path.exists(x)]
        if bad:
            raise MigprofError(f"compare: unknown option {bad[0]!r}")
        sides.append(extra)
    dataset = _dataset_sides("--" in rest, sides[0], o)
    if dataset is None:
        sides = [tuple(expand_runs(x)) for x in sides]
        if not sides[0] or not sides[1]:
            raise MigprofError("compare: each side needs at least one input: BASE... -- CAND...")
    check_output(o["html"], "the HTML page")
    return Config(() if dataset else sides[0], () if dataset else sides[1],
                  tuple(o["fail_on"] or ()),
                  "json" if o["json"] else "markdown" if o["markdown"] else "terminal",
                  o["html"], o["plotly"], o["alpha"], o["outcome"], o["all_devices"],
                  not o["no_summary"], o["jobs"] or min(4, os.cpu_count() or 1), dataset)


def _dataset_sides(sides: bool, inputs: list[str], o: dict) -> DatasetSides | None:
    """DATASET --by ...: the dataset's groups; None for BASE... -- CAND..."""
    from profiler.dataset.schema import MARKER

    given = [f"--{k}" for k in DATASET_OPTIONS if o.get(k) is not None]
    if sides:
        if given:
            raise MigprofError(f"compare: {given[0]} compares a fleet dataset's groups: "
                               "migprof compare DATASET --by COLUMN (no '--')")
        return None
    if len(inputs) == 1 and os.path.isdir(inputs[0]) and os.path.exists(os.path.join(inputs[0], MARKER)):
        return DatasetSides(inputs[0], o.get("by") or "qemu_version", o.get("where"),
                            o.get("base"), o.get("candidate"))
    if given:
        raise MigprofError(f"compare: {given[0]} needs a fleet dataset directory as the only input "
                           f"(no {MARKER} in {', '.join(inputs) or 'no input'})")
    raise MigprofError("compare: separate the sides with '--': migprof compare BASE... -- CAND... "
                       "(or give a fleet dataset: migprof compare DATASET --by COLUMN)")


def run(args: argparse.Namespace) -> int:
    from profiler.model.compare import DEFAULT_DEVICE_KINDS, compare, make_group, parse_rule
    from profiler.pipeline import every_run, load_runs
    from profiler.views import compare as view

    cfg = config(args)
    rules = [parse_rule(r) for r in cfg.rules]
    if not 0 < cfg.alpha < 1:
        raise MigprofError(f"compare: --alpha {cfg.alpha} must be between 0 and 1")
    kinds = None if cfg.all_devices else DEFAULT_DEVICE_KINDS
    if cfg.dataset is not None:
        base, cand, warnings = _dataset_groups(cfg, cfg.dataset, kinds)
    else:
        runs = every_run(load_runs([*cfg.base, *cfg.candidate], cfg.jobs, cfg.use_summary))
        base = make_group("base", runs[:len(cfg.base)], cfg.outcome, kinds)
        cand = make_group("candidate", runs[len(cfg.base):], cfg.outcome, kinds)
        warnings = [w for r in runs for w in r.report.warnings]
        for g, which in ((base, "base"), (cand, "candidate")):
            if not g.samples:
                raise MigprofError(f"compare: no migration found on the {which} side "
                                   f"({', '.join(g.inputs)})")
    c = compare(base, cand, rules, alpha=cfg.alpha)
    for w in warnings:
        print(f"migprof: warning: {w}", file=sys.stderr)
    if cfg.output == "json":  # the other forms carry these lines in their footer
        for w in c.warnings:
            print(f"migprof: {w}", file=sys.stderr)
        sys.stdout.write(view.render_json(c) + "\n")
    elif cfg.output == "markdown":
        sys.stdout.write(view.render_markdown(c))
    else:
        view.render_terminal(c)
    if cfg.html:
        from profiler.views.html import write_html

        for path in write_html(c, cfg.html, cfg.plotly):
            print(f"migprof: wrote {path}", file=sys.stderr)
    return EXIT_REGRESSION if c.regression else EXIT_OK


def _dataset_groups(cfg: Config, ds: DatasetSides, kinds):
    """The two groups of the dataset's migrations, and the dataset's warnings."""
    from profiler.dataset import groups, sql

    t = sql.compare_tables(ds.dataset, ds.where, checks=bool(cfg.html))
    gs = groups.group_samples(t.migrations, t.devices, ds.by, outcome=cfg.outcome,
                              device_kinds=kinds, checks=t.checks, dataset=ds.dataset,
                              where=ds.where)
    if not gs:
        where = f" matches --where {ds.where!r}" if ds.where else " is in it"
        raise MigprofError(f"compare: {ds.dataset}: no migration{where}")
    base, cand = groups.pick_sides(gs, ds.base, ds.candidate)
    return base, cand, list(t.warnings)
