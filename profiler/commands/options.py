"""The flags two commands share and the frozen config each command family is built from, once.

``live`` and ``record`` take ``LiveConfig`` (``record`` is ``live`` without the TUI,
into a file); ``lab`` and ``demo`` take ``LabRunConfig`` (a ``profiler.lab.run.LabConfig``
and how to show and keep the run); ``replay`` takes ``ReplayConfig``, ``import`` an
``ImportConfig``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- output paths


def check_output(path: str | os.PathLike[str] | None, what: str, *, directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: one line naming the path
    and the reason (exit 2). ``what`` names the output ("the recording"); ``directory``: a
    directory migprof fills (it may exist). Missing parents are fine where the nearest
    existing one is a writable directory, as the writers create them."""
    if path is None:
        return
    from profiler.errors import MigprofError

    p = os.path.abspath(os.fspath(path))
    if os.path.isdir(p) and not directory:
        raise MigprofError(f"{path}: cannot write {what}: {os.strerror(errno.EISDIR)}")
    if os.path.exists(p) and not os.path.isdir(p) and directory:
        raise MigprofError(f"{path}: cannot write {what}: {os.strerror(errno.ENOTDIR)}")
    probe = p if (directory and os.path.isdir(p)) or (not directory and os.path.isfile(p)) else None
    if probe is None:  # to be created: in its nearest existing parent
        probe = os.path.dirname(p)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise MigprofError(f"{path}: cannot write {what}: {probe} is not a directory")
    need = os.W_OK | (os.X_OK if os.path.isdir(probe) else 0)
    if not os.access(probe, need, effective_ids=os.access in os.supports_effective_ids):
        why = os.strerror(errno.EROFS if _read_only(probe) else errno.EACCES)
        where = "" if probe == p else f" ({probe} is not writable)"
        raise MigprofError(f"{path}: cannot write {what}: {why}{where}")


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def not_a_terminal() -> str | None:
    """Why the TUI cannot show here, or None: it needs stdout to be a terminal (or its
    output would go into a pipe or file) and stderr too (Textual draws on stderr)."""
    import sys

    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            if not stream.isatty():
                return f"{name} is not a terminal"
        except (AttributeError, ValueError):  # closed or replaced
            return f"{name} is not a terminal"
    return None


# ---------------------------------------------------------------- recordings into a dataset


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """`--dataset DIR [--host H]` on the recorders (`record`, `live`, `lab`, `demo`)."""
    p.add_argument("--dataset", metavar="DIR", help="once the recording is final, add it to "
                   "this fleet dataset (docs/dataset.md; made when missing or empty)")
    p.add_argument("--host", metavar="H", help="--dataset's host partition (default: this host)")


@dataclass(frozen=True, slots=True)
class DatasetTarget:
    """The fleet dataset a finished recording goes into (``--dataset DIR [--host H]``)."""

    dir: str
    host: str | None = None  # the host partition (None: the recording's host)

    @classmethod
    def from_args(cls, args: argparse.Namespace, recording: str | None) -> DatasetTarget | None:
        from profiler.errors import MigprofError

        d, h = getattr(args, "dataset", None), getattr(args, "host", None)
        if d is None:
            if h is not None:
                raise MigprofError("--host names the --dataset partition: give --dataset DIR too")
            return None
        if not recording:
            raise MigprofError("--dataset adds the recording once it is final: give --record FILE too")
        return cls(d, h)

    def check(self) -> None:
        """Refuse, before anything is recorded, a directory that cannot take a recording
        (not a dataset, a newer one) or a host that cannot name a partition."""
        from pathlib import Path

        from profiler.dataset.scan import HOST_RE, check_root
        from profiler.errors import InputError

        if self.host is not None and not HOST_RE.match(self.host):
            raise InputError(self.dir, f"--host {self.host!r} cannot name a partition (letters, "
                             "digits, '.', '_', '-')", field="host")
        p = Path(self.dir)
        if p.is_dir() and not any(p.iterdir()):
            return  # a new dataset: made when the recording is added
        if p.exists():
            check_root(p)


# ---------------------------------------------------------------- live and record


def add_target_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `live` and `record`: which QEMUs, which sources, how long."""
    t = p.add_argument_group("which QEMUs (at least one; several are followed at once and "
                             "kept apart)")
    t.add_argument("-p", "--pid", type=int, action="append", help="QEMU process id")
    t.add_argument("--qmp", metavar="SOCKET", action="append",
                   help="QEMU's QMP UNIX socket (the pid is found from it)")
    t.add_argument("--domain", metavar="NAME", action="append",
                   help="libvirt domain: QMP through libvirt (docs/libvirt.md)")
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI for --domain "
                   "(default qemu:///system)")
    p.add_argument("--side", choices=["source", "destination"],
                   help="side of this QEMU (default: destination if started with -incoming)")
    p.add_argument("-d", "--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("-i", "--interval", type=float, default=1.0, metavar="S",
                   help="line view: print data-fd totals every S seconds (default 1)")
    p.add_argument("--trace-log", metavar="FILE", help="QEMU trace log to tail (default: QEMU's -D "
                   "file, or a file migprof points the log at)")
    p.add_argument("--no-trace", action="store_true", help="leave QEMU's trace events and log alone")
    p.add_argument("--no-bpf", action="store_true", help="QMP and QEMU trace only")
    p.add_argument("--path", choices=["auto", "tracepoint", "kprobe"], default="auto",
                   help="BPF attach path (default: kprobe where the kernel has it and VFIO)")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="serve live metrics (OpenMetrics, "
                   "Prometheus) on http://ADDR:PORT/metrics while it runs (docs/metrics.md)")


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """What `live` / `record` attach to, read and show."""

    pids: tuple[int, ...] = ()
    qmps: tuple[str, ...] = ()  # QMP sockets (their QEMU is found from each)
    domains: tuple[str, ...] = ()  # libvirt domains (QMP through libvirt)
    connect: str | None = None  # its libvirt URI
    side: str | None = None
    duration_s: float | None = None
    interval_s: float = 1.0
    trace_log: str | None = None
    trace: bool = True  # switch QEMU's trace events on and tail its log
    bpf: bool = True
    path: str = "auto"  # BPF attach path
    record: str | None = None  # recording to write
    tui: bool = True  # the TUI when stdout is a terminal (else the line view)
    any_process: bool = False  # attach to a process that is not QEMU (tests)
    ebpf: bool = False  # print the BPF program and exit
    debug: bool = False
    dataset: DatasetTarget | None = None  # add the finished recording to this fleet dataset
    metrics: str | None = None  # ADDR:PORT to serve OpenMetrics on while the session lasts

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> LiveConfig:
        """From `live`'s or `record`'s flags; ``overrides`` set what the command decides."""
        kv = dict(
            pids=tuple(args.pid or ()), qmps=tuple(args.qmp or ()),
            domains=tuple(getattr(args, "domain", None) or ()),
            connect=getattr(args, "connect", None), side=args.side, duration_s=args.duration,
            interval_s=args.interval, trace_log=args.trace_log, trace=not args.no_trace,
            bpf=not args.no_bpf, path=args.path, record=getattr(args, "record", None),
            tui=not getattr(args, "no_tui", False), any_process=getattr(args, "any_process", False),
            ebpf=getattr(args, "ebpf", False), debug=getattr(args, "debug", False),
            metrics=getattr(args, "metrics", None),
        )
        kv.update(overrides)
        check_output(kv["record"], "the recording")
        kv["dataset"] = DatasetTarget.from_args(args, kv["record"])
        return cls(**kv)


# ---------------------------------------------------------------- lab and demo


def add_lab_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `lab` and `demo`."""
    from profiler.lab.scenarios import SCENARIOS

    p.add_argument("-s", "--scenario", default="converges", choices=sorted(SCENARIOS), metavar="NAME",
                   help="named preset: " + ", ".join(sorted(SCENARIOS)) + " (default: converges)")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, metavar="DIR",
                   help="run directory (default: ./migprof-lab-<scenario>-<time>)")
    p.add_argument("--qemu",
                   help="QEMU version (7.2, 10.0) or path to qemu-system-x86_64 (default: Debian's 7.2)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto: KVM only if a probe guest boots under it (default)")
    p.add_argument("--net", choices=("netns", "loopback"), default="netns",
                   help="two namespaces and a shaped veth (default), or plain loopback")
    p.add_argument("--port", type=int, default=0, help="migration TCP port (default 4444 / free)")
    p.add_argument("--dirty-mb", type=int, help="guest working set in MiB")
    p.add_argument("--rate-mbps", type=int, help="guest dirty rate in MiB/s (0 = flat out)")
    p.add_argument("--mem-mb", type=int, help="guest RAM in MiB")
    p.add_argument("--max-bandwidth", type=float, metavar="MIBPS", help="QMP max-bandwidth, MiB/s")
    p.add_argument("--downtime-limit", type=int, metavar="MS", help="QMP downtime-limit, ms")
    p.add_argument("--avail-switchover-bandwidth", type=float, metavar="MIBPS",
                   help="QMP avail-switchover-bandwidth, MiB/s (QEMU >= 8.2)")
    p.add_argument("--timeout", type=float, metavar="S", help="cancel the migration after S seconds")
    p.add_argument("--rate-mbit", type=float, help="tc rate of the veth, Mbit/s")
    p.add_argument("--delay-ms", type=float, help="tc netem delay of the veth, ms")
    p.add_argument("--loss", type=float, metavar="PCT", help="tc netem loss of the veth, percent")
    p.add_argument("--poll-hz", type=float, default=10.0, help="query-migrate rate (default 10)")
    p.add_argument("--no-timestamps", action="store_true", help="log without -msg timestamp=on")
    p.add_argument("--record", metavar="FILE",
                   help="also write every event of the run (QMP, sock_diag, lab marks, both trace "
                   "logs) to a recording (Parquet; see docs/recordings.md)")
    p.add_argument("--transferred-bytes", action="store_true",
                   help="also enable the migration_transferred_bytes trace flood")
    add_dataset_options(p)


@dataclass(frozen=True, slots=True)
class LabRunConfig:
    """A lab run (`lab`, `demo`): the scenario's LabConfig and how to show and keep it."""

    lab: Any  # profiler.lab.run.LabConfig
    record: str | None = None
    json: bool = False
    tui: bool = True  # demo: the TUI when stdout is a terminal
    interval_s: float = 1.0  # demo: line view period
    all_checks: bool = False  # demo: list every pre-copy check
    libvirt: bool = False  # lab: under two libvirt daemons (profiler.lab.libvirt)
    debug: bool = False
    dataset: DatasetTarget | None = None  # add the finished recording to this fleet dataset

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LabRunConfig:
        check_output(args.record, "the recording")
        lab = lab_config(args)
        check_output(lab.out, "the run directory", directory=True)
        return cls(lab=lab, record=args.record, json=bool(args.json),
                   tui=not getattr(args, "no_tui", False), interval_s=getattr(args, "interval", 1.0),
                   all_checks=getattr(args, "all_checks", False),
                   libvirt=getattr(args, "libvirt", False), debug=getattr(args, "debug", False),
                   dataset=DatasetTarget.from_args(args, args.record))


MAX_DOWNTIME_LIMIT_MS = 2_000_000  # QEMU refuses more (MAX_MIGRATE_DOWNTIME, 2000 s)


def check_lab_settings(args: argparse.Namespace) -> None:
    """The migration settings of a lab run (`lab`, `lab --vfio`, `demo`), checked before any
    work: a value QEMU would refuse is one line naming the flag (exit 2)."""
    from profiler.errors import MigprofError

    for flag, dest in (("--downtime-limit", "downtime_limit"), ("--max-bandwidth", "max_bandwidth"),
                       ("--avail-switchover-bandwidth", "avail_switchover_bandwidth")):
        v = getattr(args, dest, None)
        if v is not None and v < 0:
            raise MigprofError(f"{flag} {v:g}: must be >= 0")
    dl = getattr(args, "downtime_limit", None)
    if dl is not None and dl > MAX_DOWNTIME_LIMIT_MS:
        raise MigprofError(f"--downtime-limit {dl}: QEMU takes at most {MAX_DOWNTIME_LIMIT_MS} ms")
    t = getattr(args, "timeout", None)
    if t is not None and t <= 0:
        raise MigprofError(f"--timeout {t:g}: must be > 0 s")


def lab_config(args: argparse.Namespace) -> Any:
    """LabConfig from the shared flags."""
    from profiler.lab import scenarios
    from profiler.lab.run import LabConfig

    check_lab_settings(args)
    sc = scenarios.get(args.scenario)
    params = {}
    if args.max_bandwidth is not None:
        params["max-bandwidth"] = int(args.max_bandwidth * scenarios.MiB)
    if args.downtime_limit is not None:
        params["downtime-limit"] = args.downtime_limit
    if args.avail_switchover_bandwidth is not None:
        params["avail-switchover-bandwidth"] = int(args.avail_switchover_bandwidth * scenarios.MiB)
    shaping = dict(sc.shaping or {})
    for k, v in (("rate_mbit", args.rate_mbit), ("delay_ms", args.delay_ms), ("loss_pct", args.loss)):
        if v is not None:
            shaping[k] = v
    sc = sc.with_overrides(
        dirty_mb=args.dirty_mb, rate_mbps=args.rate_mbps, mem_mb=args.mem_mb, params=params,
        timeout_s=args.timeout, shaping=shaping or None,
        timestamps=False if args.no_timestamps else None,
        transferred_bytes=True if args.transferred_bytes else None,
    )
    out = args.out or Path(f"migprof-lab-{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return LabConfig(scenario=sc, out=out, qemu=args.qemu, accel=args.accel, net=args.net,
                     poll_hz=args.poll_hz, port=args.port)


def attach_hint(run_dir: Path) -> str:
    """How to attach another migprof to the lab's QEMUs while the run lasts."""
    return (
        f"migprof lab: while it runs, attach with: migprof live --qmp "
        f"{run_dir}/qmp-source-attach.sock (or qmp-destination-attach.sock)"
    )


def quiet_qmp_logs(debug: bool) -> None:
    """qemu.qmp logs every failed connection attempt and every peer hang-up; migprof says
    what matters in one line of its own, so keep qemu.qmp's to --debug."""
    if not debug:
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------- replay and import


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """What `replay` plays and how."""

    inputs: tuple[str, ...]
    speed: float = 1.0
    at: str | float = "start"  # start | end | seconds from the first event
    paused: bool = False
    debug: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReplayConfig:
        from profiler.errors import MigprofError

        if not 0.01 <= args.speed <= 10000:
            raise MigprofError(f"--speed {args.speed:g}: use a factor between 0.01 and 10000")
        return cls(inputs=tuple(args.inputs), speed=args.speed, at=_at(args.at),
                   paused=args.paused, debug=getattr(args, "debug", False))


def _at(text: str) -> str | float:
    from profiler.errors import MigprofError
    from profiler.views.fmt import parse_time

    if text in ("start", "end"):
        return text
    try:
        return parse_time(text)
    except ValueError as e:
        raise MigprofError(f"--at: {e}") from None


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """What `import` reads and where it writes the recording."""

    inputs: tuple[str, ...]
    output: str | None  # None: only into ``dataset`` (through a temporary recording)
    qemu_version: str | None = None
    dataset: str | None = None  # a fleet dataset to add the recording to
    host: str | None = None  # its host partition (default: the recording's host)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ImportConfig:
        if not args.output and not args.dataset:
            from profiler.errors import MigprofError

            raise MigprofError("import: give -o FILE, --dataset DIR, or both")
        check_output(args.output, "the recording")
        check_output(args.dataset, "the dataset", directory=True)
        return cls(inputs=tuple(args.inputs), output=args.output, qemu_version=args.qemu_version,
                   dataset=args.dataset, host=args.host)


# ---------------------------------------------------------------- compare


def add_compare_options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
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


class _CompareOptions(argparse.ArgumentParser):
    """Options given after the inputs: a bad one is one error line (exit 2), as before them."""

    def error(self, message: str):  # type: ignore[override]
        from profiler.errors import MigprofError

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
class CompareConfig:
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


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The Config of BASE... -- CAND... or DATASET; options may also come after the inputs."""
    from profiler.errors import MigprofError
    from profiler.pipeline import expand_runs

    rest = list(args.inputs)
    opt = _CompareOptions(prog="migprof compare", add_help=False)
    add_compare_options(opt, defaults=False)
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
    return CompareConfig(() if dataset else sides[0], () if dataset else sides[1],
                  tuple(o["fail_on"] or ()),
                  "json" if o["json"] else "markdown" if o["markdown"] else "terminal",
                  o["html"], o["plotly"], o["alpha"], o["outcome"], o["all_devices"],
                  not o["no_summary"], o["jobs"] or min(4, os.cpu_count() or 1), dataset)


def _dataset_sides(sides: bool, inputs: list[str], o: dict) -> DatasetSides | None:
    """DATASET --by ...: the dataset's groups; None for BASE... -- CAND..."""
    from profiler.dataset.schema import MARKER
    from profiler.errors import MigprofError

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
