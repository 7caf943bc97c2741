#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
r"""Where a CUDA kernel's warps wait, from ncu's source page: warp-stall samples by opcode, the hottest instructions,
and the samples over spans of the kernel's hot path, for tuning.

ncu samples each warp at intervals and charges the sample to the instruction the warp is about to issue, with the
reason it cannot (a shared-memory or multi-function-unit result not back, a barrier, a full queue, ...). Summed by
opcode and over spans of consecutive instructions, the samples show whether one spot holds the kernel or the
waiting is spread over it. The hot path is every instruction executed at least half as often as the most executed
one (in the scan kernels, the body of the per-batch loop).

Usage (one launch of one kernel; the report needs the SourceCounters and WarpStateStats sections, and -lineinfo
in the build helps reading it):
  ncu --kernel-name regex:NAME --launch-skip 2 --launch-count 1 --section SourceCounters \
      --section WarpStateStats -o report BINARY ARGS
  ncu --import report.ncu-rep --page source --csv --print-source sass > source.csv
  python3 tests/cuda/stall_mix.py source.csv [span, default 50]
"""
import collections
import csv
import sys

from sass_mix import opcode  # the same opcode of a SASS line, predicate guard dropped

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def read(path):
    """(kernel name, [row dicts]) of an ncu source-page CSV: a line naming the kernel, then a header and the rows."""
    rows = list(csv.reader(open(path, encoding="utf-8", errors="replace")))
    start = next((i for i, r in enumerate(rows) if SAMPLES in r and EXECUTED in r), None)
    if start is None:
        sys.exit(f"{path}: no column {SAMPLES!r}: export it with --page source --csv --print-source sass")
    name = rows[start - 1][1] if start > 0 and len(rows[start - 1]) > 1 else "?"
    header = rows[start]
    return name, [dict(zip(header, r)) for r in rows[start + 1 :] if len(r) == len(header)]


def reasons_of(row, columns):
    return {c[len("stall_") :]: number(row[c]) for c in columns}


def top_reasons(counter, total, n=4):
    return ", ".join(f"{k} {100 * v / total:.1f}" for k, v in counter.most_common(n) if v > 0)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    span = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    name, rows = read(sys.argv[1])
    columns = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c] if rows else []
    total = sum(number(r[SAMPLES]) for r in rows)
    executed = sum(number(r[EXECUTED]) for r in rows)
    if total == 0:
        sys.exit(f"{sys.argv[1]}: no stall samples")
    print(f"{name}\n  {total:.0f} samples, {executed:.0f} warp instructions executed, {len(rows)} in the listing")

    by_op, op_executed, op_reasons = collections.Counter(), collections.Counter(), {}
    for r in rows:
        op = opcode(r["Source"])
        by_op[op] += number(r[SAMPLES])
        op_executed[op] += number(r[EXECUTED])
        op_reasons.setdefault(op, collections.Counter()).update(reasons_of(r, columns))
    print("  by opcode: % of samples, % of executed instructions [the largest reasons, % of samples]")
    for op, s in by_op.most_common(16):
        print(f"    {op:8s} {100 * s / total:5.1f} {100 * op_executed[op] / executed:5.1f}  "
              f"[{top_reasons(op_reasons[op], total)}]")

    print("  hottest instructions: % of samples [reasons]")
    for i, r in sorted(enumerate(rows), key=lambda ir: -number(ir[1][SAMPLES]))[:8]:
        reasons = collections.Counter(reasons_of(r, columns))
        print(f"    {i:5d} {100 * number(r[SAMPLES]) / total:5.2f}  {r['Source'].strip()[:48]:48s} "
              f"[{top_reasons(reasons, total, 3)}]")

    most = max(number(r[EXECUTED]) for r in rows)
    hot = [i for i, r in enumerate(rows) if number(r[EXECUTED]) >= most / 2]
    first, last = hot[0], hot[-1]
    share = sum(number(rows[i][SAMPLES]) for i in range(first, last + 1)) / total
    print(f"  hot path: instructions {first}..{last} ({100 * share:.0f} % of the samples), in spans of {span}:")
    for a in range(first, last + 1, span):
        part = rows[a : min(a + span, last + 1)]
        ops = collections.Counter(opcode(r["Source"]) for r in part)
        reasons = collections.Counter()
        for r in part:
            reasons.update(reasons_of(r, columns))
        s = sum(number(r[SAMPLES]) for r in part)
        mix = " ".join(f"{k}{v}" for k, v in ops.most_common(5))
        print(f"    {a:5d} {100 * s / total:5.1f} %  {mix:36s} [{top_reasons(reasons, total, 3)}]")


if __name__ == "__main__":
    main()
