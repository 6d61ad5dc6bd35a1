"""How right `migprof whatif` is, proven by rerunning the lab at the settings it predicted for.

For each QEMU version and load, the lab runs once at the load's own settings (the base
recording); the what-if predicts the migration at other settings from that recording alone;
then the lab reruns at each of them (a real migration, ``--timeout`` bounding the ones that
do not converge) and ``migprof report`` of the rerun is the truth. Per rerun: converges or
not, dirty syncs, total time and downtime, against the targets of issue 13 (converges-or-not
right in >= 95 % of reruns, dirty syncs within +-1, total within 15 %, downtime within 25 %
or 10 ms). The guest's own dirty rate (its serial log) is shown beside each rerun, and the
rerun's RAM stop-copy rate: the lab guest paces its dirtying against guest time and both
QEMUs preallocate guest RAM, so on a quiet host neither should move between runs; a rate
that does says the host disturbed that run (docs/whatif.md). Where the base cannot pin a
prediction down (a dirty rate known only from below, a bandwidth step), the what-if states a
range; a second summary scores whether the rerun fell inside it, beside the point scores of
the same rows ("ok"/"MISS" in the table stay the point prediction's). The nested VFIO lab's load
(`migprof lab --vfio mtty -s iterates`) goes the same way, one L1 boot per run, and adds
mtty's stop-copy bytes.

    .venv/bin/python bench/bench_whatif.py --quick           # QEMU 10.0, 4 reruns, ~1 min
    .venv/bin/python bench/bench_whatif.py                   # both versions, 3 loads, 28 reruns
    .venv/bin/python bench/bench_whatif.py --vfio            # also the nested VFIO lab (~10 min)
    .venv/bin/python bench/bench_whatif.py --load mtty-iterates   # the nested VFIO lab only
    .venv/bin/python bench/bench_whatif.py --out res.json    # every row as JSON too

Needs root (the bandwidth-change load shapes a veth in network namespaces).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler import pipeline  # noqa: E402
from profiler.model import build_report  # noqa: E402
from profiler.model import whatif as W  # noqa: E402

# this checkout's migprof: its own venv's, else this interpreter on this checkout (a git
# worktree without a venv, run with PYTHONPATH=<worktree>)
MIGPROF = ([str(ROOT / ".venv/bin/migprof")] if (ROOT / ".venv/bin/migprof").exists()
           else [sys.executable, "-m", "profiler.cli"])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
MiB = 1 << 20
TIMEOUT_S = 8.0  # reruns that have not switched over by then are cancelled: "does not converge"


@dataclass(frozen=True)
class Load:
    name: str
    args: tuple[str, ...]  # `migprof lab` arguments of the base run
    settings: tuple[tuple[float, float], ...]  # (downtime-limit ms, max-bandwidth MiB/s) to rerun at
    quick: tuple[int, ...] = ()  # indices of ``settings`` in --quick


LOADS = (
    # the first setting of each is the base's own: how much two runs of the same settings differ
    Load("converges", ("-s", "converges", "--net", "loopback"),
         ((50, 128), (5, 128), (20, 32), (200, 16), (10, 256)), quick=(2,)),
    Load("never-converges", ("-s", "never-converges", "--net", "loopback"),
         ((20, 64), (300, 64), (700, 64), (1500, 64), (20, 1024)), quick=(2,)),
    # stuck while the veth carries 40 Mbit/s; at 2.5 s the lab lifts it to 2 Gbit/s
    Load("bandwidth-change", ("-s", "bandwidth-change", "--rate-mbit", "40", "--dirty-mb", "16",
                              "--rate-mbps", "200", "--timeout", "6"),
         ((100, 1024), (1000, 1024), (3000, 1024), (100, 8)), quick=(2,)),
)
TARGETS = "converges right >= 95 %; dirty syncs +-1; total within 15 %; downtime within 25 % or 10 ms"
# The nested VFIO lab (docs/vfio-lab.md): `iterates` re-dirties 4 MiB that max-bandwidth
# carries in ~0.5 s passes, so whether it switches over depends on the settings. Nested TCG
# passes are slow: reruns get more time before the cancel.
VFIO_TIMEOUT_S = 20.0
VFIO_LOADS = (
    Load("mtty-iterates", ("--vfio", "mtty", "-s", "iterates"),
         ((300, 8), (400, 8), (600, 8), (1000, 8), (2000, 8), (150, 16), (400, 16)), quick=(4,)),
    # the same load from a base that switched over: its downtime's fixed part is measured
    Load("mtty-iterates-at-1000", ("--vfio", "mtty", "-s", "iterates", "--downtime-limit", "1000"),
         ((1000, 8), (400, 8), (600, 8), (2000, 8), (150, 16), (400, 16)), quick=(3,)),
)


@dataclass
class Row:
    qemu: str
    load: str
    downtime_limit_ms: float
    max_bandwidth_mibps: float
    pred_converges: bool
    pred_syncs: int | None
    pred_total_ms: float | None
    pred_downtime_ms: float | None
    converged: bool
    syncs: int | None
    total_ms: float | None
    downtime_ms: float | None
    guest_mibps_base: float | None
    guest_mibps: float | None
    weak: int  # weak notes on the base recording
    same: bool = False  # rerun at the base's own settings (run-to-run spread, not a what-if)
    pred_stop_mb: float | None = None  # RAM's stop-copy bytes (MiB): what the model sets
    stop_mb: float | None = None
    stop_rate_mbps: float | None = None  # the rerun's own RAM stop-copy rate (MiB/s): the host's
    # the prediction's range where the base cannot pin it (docs/whatif.md): (lo, hi), None = no range
    range_why: tuple[str, ...] = ()
    range_converges: tuple[bool, bool] | None = None
    range_syncs: tuple[int, int] | None = None
    range_total_ms: tuple[float, float] | None = None
    range_downtime_ms: tuple[float, float] | None = None
    range_stop_mb: tuple[float, float] | None = None
    pred_dev_stop_b: int | None = None  # VFIO devices' stop-copy bytes, summed (nested lab)
    dev_stop_b: int | None = None
    range_dev_stop_b: tuple[int, int] | None = None  # their stated range (summed ends)

    @property
    def ok_converges(self) -> bool:
        return self.pred_converges == self.converged

    def ok_syncs(self) -> bool | None:
        if not (self.pred_converges and self.converged) or self.syncs is None or self.pred_syncs is None:
            return None
        return abs(self.pred_syncs - self.syncs) <= 1

    def ok_total(self) -> bool | None:
        if not (self.pred_converges and self.converged) or not self.total_ms or self.pred_total_ms is None:
            return None
        return abs(self.pred_total_ms - self.total_ms) <= 0.15 * self.total_ms

    def ok_stop(self) -> bool | None:
        if not (self.pred_converges and self.converged) or self.stop_mb is None or self.pred_stop_mb is None:
            return None
        err = abs(self.pred_stop_mb - self.stop_mb)
        return err <= 1.0 or err <= 0.25 * self.stop_mb

    def ok_downtime(self) -> bool | None:
        if not (self.pred_converges and self.converged) or self.downtime_ms is None or self.pred_downtime_ms is None:
            return None
        err = abs(self.pred_downtime_ms - self.downtime_ms)
        return err <= 10.0 or err <= 0.25 * self.downtime_ms

    # The same targets against the stated range (rows with one): the rerun within the target's
    # tolerance of [lo, hi]. Timing rows: the range converges somewhere and the rerun did.
    @property
    def has_range(self) -> bool:
        return self.range_converges is not None

    def in_converges(self) -> bool | None:
        return None if not self.has_range else self.converged in self.range_converges

    def _in(self, span: tuple[float, float] | None, v: float | None, tol) -> bool | None:
        if not self.has_range or not self.converged or span is None or v is None:
            return None
        lo, hi = span
        return lo - tol(v) <= v <= hi + tol(v)

    def in_syncs(self) -> bool | None:
        return self._in(self.range_syncs, self.syncs, lambda v: 1)

    def in_total(self) -> bool | None:
        return self._in(self.range_total_ms, self.total_ms, lambda v: 0.15 * v)

    def in_downtime(self) -> bool | None:
        return self._in(self.range_downtime_ms, self.downtime_ms, lambda v: max(10.0, 0.25 * v))

    def in_stop(self) -> bool | None:
        return self._in(self.range_stop_mb, self.stop_mb, lambda v: max(1.0, 0.25 * v))


def guest_rate(run: Path) -> float | None:
    """The guest's median reported dirty rate (MiB/s) on the source, from its serial log."""
    try:
        txt = (run / "serial-source.log").read_text(errors="replace")
    except OSError:
        return None
    rates = [int(m) for m in re.findall(r"mibps=(\d+)", txt)]
    return float(sorted(rates)[len(rates) // 2]) if rates else None


def lab(qemu: str, args: tuple[str, ...], out: Path, extra: tuple[str, ...] = ()) -> Path:
    cmd = [*MIGPROF, "lab", "--qemu", qemu, "--accel", "tcg", *args, *extra, "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        raise SystemExit(f"bench_whatif: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return out


def _ram_stopcopy(m, loaded) -> tuple[float | None, float | None]:
    """RAM's stop-copy bytes (MiB) in a rerun and the rate it went at (MiB/s, >= 8.2: over its
    iterable save; 7.2: over the downtime)."""
    ram = next((d for d in m.devices if d.kind == "ram"), None)
    if ram is None or ram.stopcopy_bytes is None:
        return None, None
    ms = ram.downtime_ms or m.downtime_ms
    return ram.stopcopy_bytes / MiB, (ram.stopcopy_bytes / MiB / (ms / 1000.0) if ms else None)


def vfio_lab(args: tuple[str, ...], out: Path, extra: tuple[str, ...] = ()) -> Path:
    """One run of the nested VFIO lab (one L1 boot), at the settings ``extra`` gives."""
    cmd = [*MIGPROF, "lab", *args, *extra, "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        raise SystemExit(f"bench_whatif: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return out / args[args.index("-s") + 1]


def _vfio_stopcopy(m) -> int | None:
    b = [d.stopcopy_bytes for d in m.devices if d.kind == "vfio" and d.stopcopy_bytes is not None]
    return sum(b) if b else None


def migration(run: Path):
    loaded = pipeline.load([str(run)])
    rep = build_report(loaded.events, meta=loaded.meta)
    return loaded, rep, W.pick(rep.migrations)


def bench_load(qemu: str, load: Load, tmp: Path, quick: bool, vfio: bool = False) -> list[Row]:
    timeout_s = VFIO_TIMEOUT_S if vfio else TIMEOUT_S
    if vfio:
        base = vfio_lab(load.args, tmp / f"{load.name}-base", ("--timeout", f"{timeout_s:g}"))
    else:
        base = lab(qemu, load.args, tmp / f"{qemu}-{load.name}-base")
    loaded, _, m = migration(base)
    x = W.measure(m, loaded.events)
    rows = []
    picks = [load.settings[i] for i in load.quick] if quick else list(load.settings)
    for dl, mb in picks:
        s = W.Setting(float(dl), float(mb) * MiB, x.recorded.avail_switchover_bandwidth_bytes_per_s)
        # the rerun's timeout counts from `migrate`; leave the cancel a little room
        p = W.predict_range(x, s, horizon_ms=timeout_s * 1000.0 - 50.0)
        args = tuple(a for a in load.args)
        for flag in ("--timeout", "--downtime-limit", "--max-bandwidth"):  # the rerun's own
            if flag in args:
                i = args.index(flag)
                args = args[:i] + args[i + 2:]
        extra = ("--downtime-limit", f"{dl:g}", "--max-bandwidth", f"{mb:g}", "--timeout", f"{timeout_s:g}")
        run = (vfio_lab(args, tmp / f"{load.name}-{dl:g}-{mb:g}", extra) if vfio
               else lab(qemu, args, tmp / f"{qemu}-{load.name}-{dl:g}-{mb:g}", extra))
        rl, _, r = migration(run)
        stop, rate = _ram_stopcopy(r, rl)
        # the model may read a limit a ms off what was set (the nested lab's 300 ms read as 301)
        same = (abs(float(dl) - x.recorded.downtime_limit_ms) <= 1.0
                and abs(float(mb) * MiB - x.recorded.max_bandwidth_bytes_per_s) <= 0.01 * MiB)
        g = p.range
        ram = next((d.stopcopy_bytes for d in g.devices if d.name == "ram"), None) if g is not None else None
        rows.append(Row(qemu, load.name, float(dl), float(mb), p.converges, p.dirty_syncs, p.total_ms,
                        p.downtime_ms, r.outcome == "completed", r.dirty_syncs if r.outcome == "completed" else None,
                        r.total_ms, r.downtime_ms, guest_rate(base), guest_rate(run), len(x.weak),
                        same, p.devices[0].stopcopy_bytes / MiB if p.devices and p.converges else None, stop, rate,
                        g.why if g else (), g.converges if g else None, g.dirty_syncs if g else None,
                        g.total_ms if g else None, g.downtime_ms if g else None,
                        (ram[0] / MiB, ram[1] / MiB) if ram else None))
        if vfio:
            rows[-1].pred_dev_stop_b = sum(d.stopcopy_bytes for d in p.devices[1:]) if p.converges else None
            spans = [d.stopcopy_bytes for d in g.devices[1:]] if g is not None else []
            if spans and all(sp is not None for sp in spans):
                rows[-1].range_dev_stop_b = (sum(sp[0] for sp in spans), sum(sp[1] for sp in spans))
            rows[-1].dev_stop_b = _vfio_stopcopy(r) if r.outcome == "completed" else None
        print(_line(rows[-1]), flush=True)
    return rows


def _v(v: float | None, nd: int = 0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def _span(v: tuple[float, float] | None, nd: int = 0) -> str:
    """`` [lo-hi]`` of a stated range (empty without one)."""
    if v is None:
        return ""
    lo, hi = _v(v[0], nd), _v(v[1], nd)
    return f" [{lo}]" if lo == hi else f" [{lo}-{hi}]"


def _in(ok: bool | None) -> str:
    return "" if ok is None else (", in range" if ok else ", OUT of range")


def _line(r: Row) -> str:
    conv = "" if r.range_converges is None or r.range_converges[0] == r.range_converges[1] else " [depends]"
    return (f"| {r.qemu} | {r.load} | {r.downtime_limit_ms:g} ms @ {r.max_bandwidth_mibps:g} MiB/s"
            f"{' (as base)' if r.same else ''} | "
            f"{'yes' if r.pred_converges else 'no'}{conv} / {'yes' if r.converged else 'no'}"
            f"{'' if r.ok_converges else ' MISS'}{_in(r.in_converges()) if conv else ''} | "
            f"{_v(r.pred_syncs)}{_span(r.range_syncs)} / {_v(r.syncs)}{_mark(r.ok_syncs())}{_in(r.in_syncs())} | "
            f"{_v(r.pred_total_ms)}{_span(r.range_total_ms)} / {_v(r.total_ms)}{_mark(r.ok_total())}"
            f"{_in(r.in_total())} | "
            f"{_v(r.pred_downtime_ms, 1)}{_span(r.range_downtime_ms, 1)} / {_v(r.downtime_ms, 1)}"
            f"{_mark(r.ok_downtime())}{_in(r.in_downtime())} | "
            f"{_v(r.pred_stop_mb, 1)}{_span(r.range_stop_mb, 1)} / {_v(r.stop_mb, 1)}{_mark(r.ok_stop())}"
            f"{_in(r.in_stop())} | {_v(r.stop_rate_mbps)} | "
            f"{_v(r.guest_mibps_base)} / {_v(r.guest_mibps)} |"
            + (f" {_v(r.pred_dev_stop_b)} / {_v(r.dev_stop_b)} |" if r.qemu.endswith("(VFIO)") else ""))


HEADER = ("| QEMU | load | setting | converges (pred / rerun) | dirty syncs | total ms | downtime ms | "
          "RAM stop-copy MiB | rerun's stop-copy MiB/s | guest MiB/s (base / rerun) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
# the nested lab's rows add the mtty devices' stop-copy bytes (its guest has no serial log)
HEADER_VFIO = HEADER.replace(" |\n", " | mtty stop-copy B |\n", 1) + "---|"


def _rate(vals: list[bool | None]) -> str:
    v = [x for x in vals if x is not None]
    return f"{sum(v)}/{len(v)}" + (f" ({100 * sum(v) / len(v):.0f} %)" if v else "")


def summary(rows: list[Row]) -> str:
    """The point predictions against the targets (what "ok" means in the table)."""
    return (f"converges-or-not right: {_rate([r.ok_converges for r in rows])}; dirty syncs +-1: "
            f"{_rate([r.ok_syncs() for r in rows])}; total within 15 %: {_rate([r.ok_total() for r in rows])}; "
            f"downtime within 25 % or 10 ms: {_rate([r.ok_downtime() for r in rows])}; RAM stop-copy bytes "
            f"within 25 % or 1 MiB: {_rate([r.ok_stop() for r in rows])} "
            f"(timing rows: both converged)")


def range_summary(rows: list[Row]) -> str:
    """The same targets against the stated ranges, on the rows that have one, next to the point
    scores of those same rows (so a range is seen to help or not, never to redefine "ok")."""
    rr = [r for r in rows if r.has_range]
    if not rr:
        return "no prediction had a range"
    why = sorted({w for r in rr for w in r.range_why})
    dep = sum(r.range_converges == (False, True) for r in rr)
    return (f"{len(rr)} rows with a range ({', '.join(why)}; {dep} say converges 'depends'); rerun inside "
            f"the range, the target's tolerance "
            f"around [lo, hi]: converges-or-not {_rate([r.in_converges() for r in rr])}; dirty syncs "
            f"{_rate([r.in_syncs() for r in rr])}; total {_rate([r.in_total() for r in rr])}; downtime "
            f"{_rate([r.in_downtime() for r in rr])}; RAM stop-copy bytes {_rate([r.in_stop() for r in rr])} "
            f"(timing rows: the range converges somewhere and the rerun did). The point predictions of the "
            f"same rows: {summary(rr)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="QEMU 10.0 only, one setting per load")
    ap.add_argument("--qemu", action="append", choices=["7.2", "10.0"], help="versions (default both)")
    ap.add_argument("--load", action="append", choices=[ld.name for ld in (*LOADS, *VFIO_LOADS)],
                    help="loads (default all; a VFIO one runs the nested lab only with it)")
    ap.add_argument("--vfio", action="store_true", help="also the nested VFIO lab: a base run, what-ifs "
                    "and a rerun at each, one L1 boot a run (builds its image the first time: minutes)")
    ap.add_argument("--out", type=Path, help="write every row as JSON here")
    ap.add_argument("--keep", type=Path, help="keep the run directories here")
    args = ap.parse_args(argv)
    versions = args.qemu or (["10.0"] if args.quick else ["7.2", "10.0"])
    t0 = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as d:
        tmp = args.keep or Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        plain = [ld for ld in LOADS if not args.load or ld.name in args.load]
        print(f"targets: {TARGETS}" + (f"\n{HEADER}" if plain else ""), flush=True)
        for qemu in versions:
            for load in plain:
                rows += bench_load(qemu, load, tmp, args.quick)
        vfio = [ld for ld in VFIO_LOADS if (args.vfio and not args.load) or ld.name in (args.load or ())]
        if vfio:
            print(f"nested VFIO lab (cancelled after {VFIO_TIMEOUT_S:g} s):\n{HEADER_VFIO}", flush=True)
        for load in vfio:
            rows += bench_load("10.0 (VFIO)", load, tmp, args.quick, vfio=True)
    print("what-ifs: " + summary([r for r in rows if not r.same]))
    print("reruns at the base's own settings: " + summary([r for r in rows if r.same]))
    print("all: " + summary(rows))
    print("ranges, what-ifs: " + range_summary([r for r in rows if not r.same]))
    print("ranges, all: " + range_summary(rows))
    if vfio:
        vr = [r for r in rows if r.qemu.endswith("(VFIO)")]
        dev = [r.pred_dev_stop_b == r.dev_stop_b for r in vr
               if r.pred_converges and r.converged and r.dev_stop_b is not None]
        # a device whose stop-copy the base never saw states a range (its size may count
        # what it sent in pre-copy): the rerun's bytes inside it
        inr = [r.range_dev_stop_b[0] <= r.dev_stop_b <= r.range_dev_stop_b[1] for r in vr
               if r.range_dev_stop_b is not None and r.converged and r.dev_stop_b is not None]
        print(f"nested VFIO lab, what-ifs: {summary([r for r in vr if not r.same])}; "
              f"mtty stop-copy bytes exact: {sum(dev)}/{len(dev)}"
              + (f", inside the stated range: {sum(inr)}/{len(inr)}" if inr else ""))
    print(f"{len(rows)} reruns in {time.monotonic() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
