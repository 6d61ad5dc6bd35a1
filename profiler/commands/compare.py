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
rules: METRIC:+N% (rise over N %), METRIC:-N% (fall), METRIC:+N (absolute, metric's unit);
    METRIC may be a pattern: 'device.*.downtime_ms:+20%'. Exit 0 fine, 1 regression, 2 error.
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


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="Compare migrations run against run",
                       description="Compare migrations run against run: BASE... -- CAND..., each "
                       "side one or more recordings, traces or run directories.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _options(p)
    # REMAINDER keeps the '--' that separates the sides (argparse would swallow it)
    p.add_argument("inputs", nargs=argparse.REMAINDER, metavar="BASE... -- CAND...")
    return p


@dataclass(frozen=True, slots=True)
class Config:
    """What one `migprof compare` does."""

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


def config(args: argparse.Namespace) -> Config:
    """The Config of BASE... -- CAND...; options may also come after the inputs."""
    from profiler.pipeline import expand_runs

    rest = list(args.inputs)
    if "--" not in rest:
        raise MigprofError("compare: separate the sides with '--': migprof compare BASE... -- CAND...")
    i = rest.index("--")
    opt = argparse.ArgumentParser(prog="migprof compare", add_help=False)
    _options(opt, defaults=False)
    o = {k: v for k, v in vars(args).items() if k not in ("inputs", "_run")}
    sides = []
    for part in (rest[:i], rest[i + 1:]):
        ns, extra = opt.parse_known_args(part)
        for k, v in vars(ns).items():
            o[k] = [*o[k], *v] if k == "fail_on" else v
        bad = [x for x in extra if x.startswith("-") and x != "-" and not os.path.exists(x)]
        if bad:
            raise MigprofError(f"compare: unknown option {bad[0]!r}")
        sides.append(tuple(expand_runs(extra)))
    if not sides[0] or not sides[1]:
        raise MigprofError("compare: each side needs at least one input: BASE... -- CAND...")
    check_output(o["html"], "the HTML page")
    return Config(sides[0], sides[1], tuple(o["fail_on"] or ()),
                  "json" if o["json"] else "markdown" if o["markdown"] else "terminal",
                  o["html"], o["plotly"], o["alpha"], o["outcome"], o["all_devices"],
                  not o["no_summary"], o["jobs"] or min(4, os.cpu_count() or 1))


def run(args: argparse.Namespace) -> int:
    from profiler.model.compare import DEFAULT_DEVICE_KINDS, compare, make_group, parse_rule
    from profiler.pipeline import every_run, load_runs
    from profiler.views import compare as view

    cfg = config(args)
    rules = [parse_rule(r) for r in cfg.rules]
    if not 0 < cfg.alpha < 1:
        raise MigprofError(f"compare: --alpha {cfg.alpha} must be between 0 and 1")
    runs = every_run(load_runs([*cfg.base, *cfg.candidate], cfg.jobs, cfg.use_summary))
    kinds = None if cfg.all_devices else DEFAULT_DEVICE_KINDS
    base = make_group("base", runs[:len(cfg.base)], cfg.outcome, kinds)
    cand = make_group("candidate", runs[len(cfg.base):], cfg.outcome, kinds)
    for g in (base, cand):
        if not g.samples:
            raise MigprofError(f"compare: no migration found on the {g.label} side "
                               f"({', '.join(g.inputs)})")
    c = compare(base, cand, rules, alpha=cfg.alpha)
    for w in (w for r in runs for w in r.report.warnings):
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
