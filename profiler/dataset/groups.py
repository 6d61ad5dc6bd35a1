"""Compare over a dataset: the migrations table's rows split into groups (``--by``), each a
``model.compare.Group`` of the per-migration samples ``migprof compare`` tests (pure, over
Arrow tables)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from profiler.errors import MigprofError
from profiler.model.compare import KERNEL_VIEW_LACKS, Group, Sample, Selection
from profiler.model.results import Check

BY = ("qemu_version", "host", "device_driver")
# compare's per-migration metrics, one column each in the migrations table
METRICS = ("total_ms", "setup_ms", "downtime_ms", "stopcopy_ms", "dirty_syncs", "checks",
           "checks_to_converge", "transferred_bytes", "bandwidth_bytes_per_s", "read_ms")
DEVICE_METRICS = ("downtime_ms", "load_ms", "precopy_bytes", "stopcopy_bytes", "read_ms")
# the checks columns the HTML page's convergence curves read
CURVE_COLUMNS = ("recording", "migration", "check", "t_ms", "kind", "pending_bytes", "threshold_bytes")
NO_VALUE = "(none)"  # the label of a group whose key is null (e.g. no VFIO device)


def label(key: str | None) -> str:
    return NO_VALUE if key is None else key


def _version_key(v: str | None) -> tuple:
    """Release order: 7.2.22 < 10.0.2; families such as >=10.0 after their release; null last."""
    if v is None:
        return (1,)
    nums = [int(x) for x in re.findall(r"\d+", v)]
    return (0, nums, v)


def _order(by: str, keys: Iterable[str | None]) -> list[str | None]:
    if by == "qemu_version":
        return sorted(keys, key=_version_key)
    return sorted(keys, key=lambda k: (k is None, k or ""))


def _device_wide(dev: pa.Table | None, kinds: set[str] | None) -> pd.DataFrame | None:
    """Device metrics as columns ``device.<name>.<field>``, indexed by (recording, migration)."""
    if dev is None or dev.num_rows == 0:
        return None
    d = dev.select(["recording", "migration", "device", "kind", *DEVICE_METRICS]).to_pandas()
    if kinds is not None:
        d = d[d["kind"].isin(sorted(kinds))]
    d = d.drop(columns="kind").drop_duplicates(["recording", "migration", "device"])
    if d.empty:
        return None
    wide = d.set_index(["recording", "migration", "device"])[list(DEVICE_METRICS)].astype("float64")
    wide = wide.unstack("device")
    wide.columns = [f"device.{dv}.{f}" for f, dv in wide.columns]
    return wide


def _metrics(frame: pd.DataFrame, cols: Sequence[str]) -> list[dict[str, float]]:
    vals = frame[list(cols)].to_numpy(dtype="float64", na_value=np.nan)
    names = np.asarray(cols, dtype=object)
    ok = ~np.isnan(vals)
    return [{n: float(v) for n, v in zip(names[m], row[m], strict=True)}
            for row, m in zip(vals, ok, strict=True)]


def _curves(checks: pa.Table | None) -> dict[tuple[str, int], tuple[Check, ...]]:
    """Each migration's checks as the model's ``Check`` values (only what the curves read)."""
    if checks is None or checks.num_rows == 0:
        return {}
    c = checks.select(list(CURVE_COLUMNS)).to_pandas().sort_values(["recording", "migration", "check"])
    t = c["t_ms"].astype("float64")
    thr = c["threshold_bytes"].astype("Int64")
    made = [Check(*row) for row in zip(
        t.astype(object).where(t.notna(), None).tolist(), c["kind"].astype(str).tolist(),
        c["pending_bytes"].astype("Int64").fillna(0).astype("int64").tolist(),
        thr.astype(object).where(thr.notna(), None).tolist(), strict=True)]
    out: dict[tuple[str, int], tuple[Check, ...]] = {}
    for (rec, mig), idx in c.groupby(["recording", "migration"], sort=False).indices.items():
        out[(str(rec), int(mig))] = tuple(made[i] for i in idx)
    return out


def group_samples(migrations: pa.Table, devices: pa.Table | None, by: str, *,
                  outcome: str = "completed",
                  device_kinds: Iterable[str] | None = ("ram", "vfio"),
                  checks: pa.Table | None = None, dataset: str = "",
                  where: str | None = None) -> tuple[Group, ...]:
    """Split the migrations (rows of the migrations view, host included) by ``by`` and make
    each group's samples as ``compare.make_group`` does: only migrations with ``outcome``
    (``all``: every one), or all of the group's with a note when none has it; per-device
    metrics for ``device_kinds`` (None: every device); a kernel-view migration without the
    metrics the kernel cannot see. ``checks`` (rows of the checks view) give each sample its
    convergence curve. Groups come in release order for qemu_version, else sorted; a null
    key (e.g. no VFIO device) last. Each group's ``selection`` names ``dataset``, ``by``,
    its key and ``where``."""
    if by not in BY:
        raise MigprofError(f"--by {by!r}: one of {', '.join(BY)}")
    if by not in migrations.column_names:
        raise MigprofError(f"--by {by}: the migrations table has no {by} column")
    m = migrations.select([c for c in ("recording", "migration", "outcome", "view", "host",
                                       "qemu_version", "device_driver", *METRICS)
                           if c in migrations.column_names]).to_pandas()
    m[by] = m[by].astype(object).where(m[by].notna(), None)
    if "view" in m.columns:
        kernel = (m["view"] == "kernel").to_numpy(dtype=bool)
        m.loc[kernel, list(KERNEL_VIEW_LACKS)] = np.nan
    else:
        m["view"] = "qemu"
    key_cols = ["recording", "migration"]
    wide = _device_wide(devices, set(device_kinds) if device_kinds is not None else None)
    if wide is not None:
        m = m.join(wide, on=key_cols)
    cols = [c for c in m.columns if c in METRICS or c.startswith("device.")]
    curves = _curves(checks)
    groups = []
    for key in _order(by, m[by].unique().tolist()):
        g = m[m[by].isna()] if key is None else m[m[by] == key]
        counts = g["outcome"].value_counts(dropna=False)
        outcomes = {str(k): int(v) for k, v in counts.items()}
        taken, note = g, None
        if outcome != "all":
            taken = g[g["outcome"] == outcome]
            if taken.empty:
                taken, note = g, f"no {outcome} migration; compared all {len(g)} migrations"
        # the group's recordings, as a file compare's inputs: also those none of whose
        # migrations is taken (their outcomes are counted all the same)
        inputs = tuple(dict.fromkeys(g["recording"].astype(str).tolist()))
        recs = taken["recording"].astype(str).tolist()
        at = {r: i for i, r in enumerate(inputs)}
        idx = taken["migration"].astype(int).tolist()
        samples = tuple(Sample(at[r], i, mt, str(v), curves.get((r, i), ()))
                        for r, i, mt, v in zip(recs, idx, _metrics(taken, cols),
                                               taken["view"].astype(str).tolist(), strict=True))
        groups.append(Group(
            label(key), inputs, samples, outcomes,
            qemu_versions=tuple(_order("qemu_version", {str(v) for v in taken["qemu_version"].dropna()})),
            hosts=tuple(sorted({str(h) for h in taken.get("host", pd.Series(dtype=object)).dropna()})),
            selection=Selection(dataset, by, key, where), note=note))
    return tuple(groups)


def pick_sides(groups: Sequence[Group], base: str | None = None,
               candidate: str | None = None) -> tuple[Group, Group]:
    """The two groups to compare: named by ``base``/``candidate`` (labels), else the only
    two there are, in the groups' order (older QEMU release is the base)."""
    labels = [g.label for g in groups]
    if not groups:
        raise MigprofError("compare: no migration matches in the dataset")
    by = groups[0].selection.by if groups[0].selection is not None else "group"
    if base is None and candidate is None:
        if len(groups) != 2:
            raise MigprofError(f"compare: --by {by} gives {len(groups)} group(s) ({', '.join(labels)}); "
                               "name two with --base and --candidate")
        return groups[0], groups[1]
    picked = []
    for what, want in (("--base", base), ("--candidate", candidate)):
        if want is None:
            rest = [g for g in groups if g.label not in (base, candidate)]
            if len(rest) != 1:
                raise MigprofError(f"compare: give {what} too: --by {by} has {', '.join(labels)}")
            picked.append(rest[0])
            continue
        hit = [g for g in groups if g.label == want]
        if not hit:
            raise MigprofError(f"compare: {what} {want!r}: no such {by} in the dataset "
                               f"(there are {', '.join(labels)})")
        picked.append(hit[0])
    if picked[0] is picked[1]:
        raise MigprofError(f"compare: --base and --candidate are the same group {picked[0].label!r}")
    return picked[0], picked[1]


def dataset_sides(dataset: str, by: str, where: str | None, base: str | None, candidate: str | None, *,
                  outcome: str, device_kinds: Any, checks: bool) -> tuple[Any, Any, list[str]]:
    """`compare DATASET`: the two groups of the dataset's migrations, and its warnings."""
    from profiler.dataset import sql

    t = sql.compare_tables(dataset, where, checks=checks)
    gs = group_samples(t.migrations, t.devices, by, outcome=outcome, device_kinds=device_kinds,
                       checks=t.checks, dataset=dataset, where=where)
    if not gs:
        matching = f" matches --where {where!r}" if where else " is in it"
        raise MigprofError(f"compare: {dataset}: no migration{matching}")
    b, c = pick_sides(gs, base, candidate)
    return b, c, list(t.warnings)
