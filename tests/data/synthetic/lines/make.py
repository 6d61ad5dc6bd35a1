"""Write the synthetic per-version line fixtures of this directory (see README.md).

Run from the repository root: .venv/bin/python tests/data/synthetic/lines/make.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # tests/ for the case table

from test_qemu_log import CASES, PREFIXES  # noqa: E402

# the prefix each version prints with -msg timestamp=on (qemu-trace.md section 4)
NATURAL = {"7.2": "tid", "8.0": "tid", "8.1": "tid", "8.2": "tid", "9.0": "tid", "9.1": "tid",
           "9.2": "tid", "10.0": "tid", "10.1": "iso", "10.2": "iso"}


def main() -> None:
    for version in NATURAL:
        lines = [b for v, b, _ in CASES if v == version]
        fmt = PREFIXES[NATURAL[version]][0]
        text = "".join(fmt(b) + "\n" for b in lines)
        (HERE / f"v{version}-{NATURAL[version]}.log").write_text(text)
    every = [b for _, b, _ in CASES]
    for prefix in ("bare", "iso-nofrac", "prog", "iso-guest-prog", "stap"):
        fmt = PREFIXES[prefix][0]
        # interleaved with non-trace output, as QEMU's stderr/-D file has it
        text = "".join(fmt(b) + "\n" + ("qemu-system-x86_64: warning: unrelated\n" if i % 7 == 0 else "")
                       for i, b in enumerate(every))
        (HERE / f"all-{prefix}.log").write_text(text)


if __name__ == "__main__":
    main()
