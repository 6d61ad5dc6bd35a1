"""`migprof compare`: compare migrations run against run (BASE... -- CAND...)."""

from __future__ import annotations

import argparse
import sys

from profiler.commands.options import add_compare_options, compare_config
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


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="Compare migrations run against run",
                       description="Compare migrations run against run: BASE... -- CAND..., each "
                       "side one or more recordings, traces or run directories; or two groups "
                       "of a fleet dataset's migrations: DATASET --by COLUMN.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compare_options(p)
    # REMAINDER keeps the '--' that separates the sides (argparse would swallow it)
    p.add_argument("inputs", nargs=argparse.REMAINDER, metavar="BASE... -- CAND... | DATASET")
    return p


def run(args: argparse.Namespace) -> int:
    from profiler.model.compare import DEFAULT_DEVICE_KINDS, compare, make_group, parse_rule
    from profiler.pipeline import every_run, load_runs
    from profiler.views import compare as view

    cfg = compare_config(args)
    rules = [parse_rule(r) for r in cfg.rules]
    if not 0 < cfg.alpha < 1:
        raise MigprofError(f"compare: --alpha {cfg.alpha} must be between 0 and 1")
    kinds = None if cfg.all_devices else DEFAULT_DEVICE_KINDS
    if cfg.dataset is not None:
        from profiler.dataset.groups import dataset_sides

        ds = cfg.dataset
        base, cand, warnings = dataset_sides(ds.dataset, ds.by, ds.where, ds.base, ds.candidate,
                                             outcome=cfg.outcome, device_kinds=kinds, checks=bool(cfg.html))
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


