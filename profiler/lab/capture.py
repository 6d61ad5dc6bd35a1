"""Regenerate the real-trace fixtures in tests/data/real/ (`python -m profiler.lab.capture`).

Each fixture is one `migprof lab` run directory, named ``<qemu version>-<scenario>``,
captured over loopback (the namespaces add nothing the parsers see). Logs larger than
``GZIP_OVER`` bytes are gzipped in place (``source.log`` -> ``source.log.gz``).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil
import sys
from pathlib import Path

from profiler.lab import scenarios
from profiler.lab.run import LabConfig, run_scenario

VERSIONS = ("7.2", "10.0")
FIXTURE_SCENARIOS = (
    "converges",
    "cancel-retry",
    "downtime-raise",
    "destination-dies",
    "no-timestamps",
    "transferred-bytes",
)
# migration_transferred_bytes exists from 8.1 on (qemu-trace.md §2.4)
SKIP = {("7.2", "transferred-bytes")}
GZIP_OVER = 256 * 1024


def command_for(version: str, scenario: str, out: Path) -> str:
    """The `migprof lab` command line equivalent to one fixture capture."""
    return (
        f"migprof lab --net loopback --accel tcg --qemu {version} --scenario {scenario} --out {out}"
    )


def capture(version: str, scenario: str, root: Path) -> Path:
    out = root / f"{version}-{scenario}"
    if out.exists():
        shutil.rmtree(out)
    cfg = LabConfig(
        scenario=scenarios.get(scenario), out=out, qemu=version, accel="tcg", net="loopback"
    )
    res = run_scenario(cfg)
    if res.status != cfg.scenario.expect:
        print(
            f"capture: {out}: ended {res.status!r}, expected {cfg.scenario.expect!r}",
            file=sys.stderr,
        )
    for f in sorted(out.glob("*.log")):
        if f.stat().st_size > GZIP_OVER:
            with (
                f.open("rb") as src,
                gzip.open(f.with_suffix(".log.gz"), "wb", compresslevel=9) as dst,
            ):
                shutil.copyfileobj(src, dst)
            f.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiler.lab.capture", description=__doc__)
    p.add_argument("--root", type=Path, default=Path("tests/data/real"))
    p.add_argument("--qemu", action="append", choices=VERSIONS, help="only these versions")
    p.add_argument("--scenario", action="append", choices=FIXTURE_SCENARIOS, help="only these")
    args = p.parse_args(argv)
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    for v in args.qemu or VERSIONS:
        for s in args.scenario or FIXTURE_SCENARIOS:
            if (v, s) in SKIP:
                continue
            out = capture(v, s, args.root)
            print(f"{out}: {command_for(v, s, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
