"""The nested VFIO lab: real VFIO migrations of the kernel's mtty device inside an L1 guest.

Entry points for ``migprof lab --vfio mtty``: ``add_vfio_arguments(parser)`` adds the
flags, ``run_vfio_lab(args)`` builds or reuses the L1 image, boots it, runs the
scenarios and copies each run directory back to the host. See docs/vfio-lab.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from profiler.errors import EXIT_OK, EXIT_REGRESSION, MigprofError

VFIO_DEVICES = ("mtty",)


def _scenario_names() -> list[str]:
    from profiler.lab.vfio.scenarios import SCENARIOS

    return list(SCENARIOS)


def add_vfio_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the VFIO lab's flags to the ``lab`` parser (``--scenario``/``--out`` only if absent)."""
    g = parser.add_argument_group("nested VFIO lab (docs/vfio-lab.md)")
    g.add_argument("--vfio", choices=VFIO_DEVICES, metavar="DEVICE",
                   help="run the migration inside a nested L1 VM with a real VFIO device "
                        "(mtty: the kernel's sample mdev driver); --scenario then takes one of "
                        + ", ".join([*_scenario_names(), "all"]))
    g.add_argument("--vfio-rebuild", action="store_true",
                   help="rebuild the cached L1 image even if its inputs did not change")
    g.add_argument("--vfio-report-in-l1", action="store_true",
                   help="also run 'migprof report --json' inside L1 on each run")
    g.add_argument("--vfio-keep", action="store_true",
                   help="keep the L1 results directory (console log, dmesg, runner log)")
    have = parser._option_string_actions  # argparse offers no public lookup
    names = [*_scenario_names(), "all"]
    if "--scenario" in have:
        # the lab's own --scenario: let it also accept the VFIO scenario names
        act = have["--scenario"]
        if act.choices is not None:
            act.choices = sorted(set(act.choices) | set(names))
    else:
        g.add_argument("--scenario", action="append", metavar="NAME",
                       help="VFIO scenario (repeatable; default all): " + ", ".join(names))
    if "--out" not in have:
        g.add_argument("--out", type=Path, metavar="DIR",
                       help="where the run directories go (default ./migprof-vfio-<time>)")


def _scenarios_from_args(args: argparse.Namespace) -> list[str]:
    from profiler.lab.vfio.scenarios import SCENARIOS

    raw = getattr(args, "scenario", None)
    names = [raw] if isinstance(raw, str) else list(raw or [])
    names = [n for item in names for n in str(item).split(",") if n]
    if not names or names == ["all"]:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise MigprofError(f"unknown VFIO scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    return names


MiB = 1 << 20
GUEST_MAX_DIRTY_MB = 60  # the L2 guest has 64 MiB and dirties from 2 MiB up
# `migprof lab` flags of the host lab that the nested lab has no use for (dest, flag):
# given with --vfio they are refused rather than silently ignored
_HOST_LAB_ONLY = (("qemu", "--qemu"), ("rate_mbps", "--rate-mbps"), ("mem_mb", "--mem-mb"),
                  ("rate_mbit", "--rate-mbit"), ("delay_ms", "--delay-ms"), ("loss", "--loss"),
                  ("record", "--record"), ("no_timestamps", "--no-timestamps"),
                  ("transferred_bytes", "--transferred-bytes"), ("libvirt", "--libvirt"))


def overrides_from_args(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The user's settings for the scenarios ``names`` (``--downtime-limit MS``,
    ``--max-bandwidth MIBPS``, ``--avail-switchover-bandwidth MIBPS``, ``--timeout S``,
    ``--dirty-mb N``: the host lab's flags and units), as ``Scenario.with_overrides``
    keywords for the runner in L1. Values are range-checked by the command
    (commands.options.check_lab_settings); MigprofError for what the nested lab cannot do."""
    from profiler.lab.vfio.scenarios import SCENARIOS

    if getattr(args, "dataset", None):
        raise MigprofError("--dataset is not available with --vfio; add its run directories "
                           "with: migprof import RUN_DIR --dataset DIR")
    for dest, flag in _HOST_LAB_ONLY:
        if getattr(args, dest, None) not in (None, False):
            raise MigprofError(f"{flag} is not available with --vfio (the nested lab runs QEMU 10.0 "
                               "over loopback inside L1; docs/vfio-lab.md)")
    for dest, flag, default in (("accel", "--accel", "auto"), ("net", "--net", "netns"), ("port", "--port", 0)):
        if getattr(args, dest, default) != default:
            raise MigprofError(f"{flag} is not available with --vfio (the nested lab runs QEMU 10.0 "
                               "over loopback inside L1; docs/vfio-lab.md)")
    params: dict[str, Any] = {}
    if getattr(args, "downtime_limit", None) is not None:
        params["downtime-limit"] = int(args.downtime_limit)
    if getattr(args, "max_bandwidth", None) is not None:
        params["max-bandwidth"] = int(args.max_bandwidth * MiB)
    if getattr(args, "avail_switchover_bandwidth", None) is not None:
        params["avail-switchover-bandwidth"] = int(args.avail_switchover_bandwidth * MiB)
    out: dict[str, Any] = {}
    if params:
        out["params"] = params
    if getattr(args, "timeout", None) is not None:
        out["cancel_after_s"] = float(args.timeout)
    dirty_mb = getattr(args, "dirty_mb", None)
    if dirty_mb is not None:
        if not 1 <= dirty_mb <= GUEST_MAX_DIRTY_MB:
            raise MigprofError(f"--dirty-mb {dirty_mb}: the nested lab's guest dirties 1 to "
                               f"{GUEST_MAX_DIRTY_MB} MiB")
        out["dirty_bytes"] = int(dirty_mb) * MiB
    if out:
        flags = [f for f, d in (("--downtime-limit", "downtime_limit"), ("--max-bandwidth", "max_bandwidth"),
                                ("--avail-switchover-bandwidth", "avail_switchover_bandwidth"),
                                ("--timeout", "timeout"), ("--dirty-mb", "dirty_mb"))
                 if getattr(args, d, None) is not None]
        for n in names:
            if not SCENARIOS[n].takes_settings:
                raise MigprofError(f"{flags[0]} makes no sense for VFIO scenario {n!r}: its migration "
                                   "fails at set-up, before any pre-copy; choose another --scenario")
    return out


def summarize(run_dir: Path) -> dict[str, Any]:
    """One scenario's outcome and QEMU's own numbers, from its run directory."""
    info = json.loads((run_dir / "run.json").read_text())
    qm: dict[str, Any] = {}
    p = run_dir / "query-migrate-source.json"
    if p.exists():
        qm = json.loads(p.read_text())
    sc = info.get("scenario", {})
    return {
        "scenario": sc.get("name", run_dir.name),
        "outcome": info.get("outcome"),
        "expected": sc.get("expect_outcome"),
        "total_ms": qm.get("total-time"),
        "downtime_ms": qm.get("downtime"),
        "dirty_syncs": (qm.get("ram") or {}).get("dirty-sync-count"),
        "vfio_transferred": (qm.get("vfio") or {}).get("transferred"),
        "error": info.get("error"),
        "dir": str(run_dir),
    }


def run_vfio_lab(args: argparse.Namespace) -> int:
    """``migprof lab --vfio mtty``: build/reuse the image, boot L1, run, copy run dirs back."""
    from profiler.lab.vfio.image import ensure_image
    from profiler.lab.vfio.l1 import run_job
    from profiler.lab.vfio.scenarios import SCENARIOS

    if getattr(args, "list", False):
        for name, sc in SCENARIOS.items():
            print(f"{name:18} {sc.description}")
        return EXIT_OK
    scenarios = _scenarios_from_args(args)
    overrides = overrides_from_args(args, scenarios)
    out = Path(getattr(args, "out", None) or f"migprof-vfio-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise MigprofError(f"{out}: output directory exists and is not empty")

    def progress(step: str) -> None:
        print(f"vfio lab: building L1 image: {step}", file=sys.stderr)

    image = ensure_image(rebuild=bool(getattr(args, "vfio_rebuild", False)), progress=progress)
    print(f"vfio lab: L1 image {image.dir} (kernel {image.manifest.get('KVER')}, "
          f"{image.manifest.get('QEMU_VERSION')})", file=sys.stderr)
    work = image.dir.parent.parent / "vfio-runs" / time.strftime("%Y%m%d-%H%M%S")
    print(f"vfio lab: booting L1 (TCG) for {', '.join(scenarios)}", file=sys.stderr)
    try:
        res = run_job(image, work, scenarios,
                      report_in_l1=bool(getattr(args, "vfio_report_in_l1", False)),
                      overrides=overrides)
    except MigprofError as e:
        raise MigprofError(f"{e} (L1 console and logs kept in {work})") from e
    try:
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in scenarios:
            src = res.runs / name
            if not src.exists():
                raise MigprofError(f"vfio lab: step runner: no run directory for {name}; "
                                   f"see {work / 'runner.log'}")
            shutil.copytree(src, out / name, dirs_exist_ok=True)
            rows.append(summarize(out / name))
        for extra in ("runner.log", "dmesg.txt", "console.log", "l1-kernel", "diag.txt"):
            if (work / extra).exists():
                shutil.copy2(work / extra, out / extra)
    finally:
        if not getattr(args, "vfio_keep", False):
            shutil.rmtree(work, ignore_errors=True)
    print(f"vfio lab: L1 reached init in {res.boot_s:.1f}s, ran {len(scenarios)} scenario(s) in "
          f"{res.wall_s:.1f}s", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"schema": "migprof.vfio-lab/1", "boot_s": res.boot_s,
                          "wall_s": res.wall_s, "runs": rows}, sort_keys=True))
    else:
        print(f"{'SCENARIO':<20}{'OUTCOME':<11}{'TOTAL(ms)':>10}{'DOWN(ms)':>9}{'SYNCS':>6}"
              f"{'VFIO(B)':>8}")
        for r in rows:
            print(f"{r['scenario']:<20}{str(r['outcome']):<11}{_n(r['total_ms']):>10}"
                  f"{_n(r['downtime_ms']):>9}{_n(r['dirty_syncs']):>6}"
                  f"{_n(r['vfio_transferred']):>8}")
    bad = 0
    for r in rows:
        # a migrate command QEMU refuses outright is the failure the scenario expects too;
        # at the user's settings either end is an answer (scenarios.EITHER)
        matched = (r["outcome"] in str(r["expected"]).split(" or ")
                   or (r["expected"] == "failed" and r["outcome"] == "refused"))
        if not matched:
            bad += 1
            print(f"vfio lab: {r['scenario']}: expected {r['expected']}, got {r['outcome']}: "
                  f"{r['error']}", file=sys.stderr)
    print(f"vfio lab: run directories in {out}/ (migprof report {out}/<scenario>)", file=sys.stderr)
    return EXIT_REGRESSION if bad else EXIT_OK


def _n(v: Any) -> str:
    return "-" if v is None else str(v)
