"""`migprof compare`: compare migrations run against run (BASE... -- CAND...)."""

from __future__ import annotations

import argparse
import os
import sys

from profiler.errors import EXIT_OK, EXIT_REGRESSION, MigprofError

EXAMPLES = """examples:
    migprof compare base.parquet -- cand.parquet      # one run a side
    migprof compare base/*.parquet -- cand/*.parquet   # 5+ runs a side: U test, ~ = not significant
    migprof compare a/ -- b/ --fail-on 'downtime_ms:+10%' --fail-on 'total_ms:+500'
    migprof compare old.log -- new.parquet --json      # traces, recordings, run dirs mix
    migprof compare b*.parquet -- c*.parquet --html cmp.html   # convergence curves overlaid
rules: METRIC:+N% (rise over N %), METRIC:-N% (fall), METRIC:+N (absolute, metric's unit);
    METRIC may be a pattern: 'device.*.downtime_ms:+20%'. Exit 0 fine, 1 regression, 2 error.
"""


def _options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--fail-on", action="append", metavar="RULE", default=d([]),
                   help="fail (exit 1) when a metric gets worse by more than this; repeatable")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", default=d(False), help="print JSON (migprof.compare/1)")
    out.add_argument("--markdown", action="store_true", default=d(False), help="print a Markdown table")
    p.add_argument("--html", metavar="FILE", default=d(None),
                   help="also write an HTML page with both sides' convergence curves overlaid")
    p.add_argument("--alpha", type=float, default=d(0.05), help="significance level (default 0.05)")
    p.add_argument("--outcome", choices=("completed", "all"), default=d("completed"),
                   help="which migrations are samples (default: completed ones)")
    p.add_argument("--all-devices", action="store_true", default=d(False),
                   help="per-device metrics for every device QEMU names, not only RAM and VFIO")
    p.add_argument("--no-summary", action="store_true", default=d(False),
                   help="rebuild every report from the events, ignoring stored summaries")
    p.add_argument("-j", "--jobs", type=int, default=d(0), metavar="N",
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


def split_sides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """BASE... -- CAND...; options may also come after the inputs."""
    rest = list(args.inputs)
    if "--" not in rest:
        raise MigprofError("compare: separate the sides with '--': migprof compare BASE... -- CAND...")
    i = rest.index("--")
    opt = argparse.ArgumentParser(prog="migprof compare", add_help=False)
    _options(opt, defaults=False)
    sides = []
    for part in (rest[:i], rest[i + 1:]):
        ns, extra = opt.parse_known_args(part)
        for k, v in vars(ns).items():
            if k == "fail_on":
                args.fail_on = list(args.fail_on or []) + v
            else:
                setattr(args, k, v)
        bad = [x for x in extra if x.startswith("-") and x != "-" and not os.path.exists(x)]
        if bad:
            raise MigprofError(f"compare: unknown option {bad[0]!r}")
        sides.append(extra)
    base, cand = (_expand(x) for x in sides)
    if not base or not cand:
        raise MigprofError("compare: each side needs at least one input: BASE... -- CAND...")
    return base, cand


def _expand(paths: list[str]) -> list[str]:
    """A directory of recordings (not a lab run directory) is one run per recording."""
    from pathlib import Path

    from profiler import store

    out = []
    for p in paths:
        d = Path(p)
        if d.is_dir() and not (d / "run.json").exists():
            recs = sorted(str(f) for f in d.iterdir() if f.is_file() and store.is_recording(f))
            if recs:
                out += recs
                continue
        out.append(p)
    return out


def _load_one(path: str, use_summary: bool = True):
    """A Run, or the error's text: InputError does not survive pickling between processes."""
    from profiler.compare import load_run

    try:
        return load_run(path, use_summary=use_summary)
    except MigprofError as e:
        return ("error", str(e), e.exit_code)


def _load(paths: list[str], jobs: int, use_summary: bool = True):
    """Every input as a Run, in order: stored summaries first, the rest rebuilt in processes."""
    from profiler.compare import cached_run

    runs = {}
    if use_summary:
        for p in paths:
            r = cached_run(p)
            if r is not None:
                runs[p] = r
    todo = [p for p in paths if p not in runs]
    if jobs <= 1 or len(todo) < 4:
        out = [_load_one(p, use_summary=False) for p in todo]
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        # fork: the children start with pandas and the model already imported
        with cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("fork")) as ex:
            out = list(ex.map(_load_one, todo, [False] * len(todo),
                              chunksize=max(1, len(todo) // (jobs * 4))))
    for p, r in zip(todo, out, strict=True):
        if isinstance(r, tuple):
            err = MigprofError(r[1])
            err.exit_code = r[2]
            raise err
        runs[p] = r
    return [runs[p] for p in paths]


def run(args: argparse.Namespace) -> int:
    from profiler.compare import compare, make_side, parse_rule

    base_in, cand_in = split_sides(args)
    rules = [parse_rule(r) for r in args.fail_on or []]
    if not 0 < args.alpha < 1:
        raise MigprofError(f"compare: --alpha {args.alpha} must be between 0 and 1")
    jobs = args.jobs or min(4, os.cpu_count() or 1)
    runs = _load(base_in + cand_in, jobs, not args.no_summary)
    kinds = None if args.all_devices else ("ram", "vfio")
    base = make_side("base", runs[:len(base_in)], args.outcome, kinds)
    cand = make_side("candidate", runs[len(base_in):], args.outcome, kinds)
    for side in (base, cand):
        if not side.samples:
            raise MigprofError(f"compare: no migration found on the {side.label} side "
                               f"({', '.join(side.inputs)})")
    c = compare(base, cand, rules, alpha=args.alpha)
    for r in runs:
        for w in r.warnings:
            print(f"migprof: warning: {w}", file=sys.stderr)
    if args.json:  # the other forms carry these lines in their footer
        for w in c.warnings:
            print(f"migprof: {w}", file=sys.stderr)
    from profiler.views import compare as view

    if args.json:
        sys.stdout.write(view.render_json(c) + "\n")
    elif args.markdown:
        sys.stdout.write(view.render_markdown(c))
    else:
        view.render_terminal(c)
    if args.html:
        from profiler.views.html import render_html

        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(c))
        print(f"migprof: wrote {args.html}", file=sys.stderr)
    return EXIT_REGRESSION if c.regression else EXIT_OK
