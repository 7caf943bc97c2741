#!/usr/bin/env python3
"""Each kernel family of a profiled step against the limit of the unit that bounds it.

Reads ncu's --csv output of one or more steps (tests/cuda/profile_on_gpu.sh limits) holding, per launch,
gpu__time_duration.sum, sm__cycles_elapsed.avg, sm__inst_executed.sum, sm__inst_executed_pipe_xu.sum and
dram__bytes.sum, and prints per family: kernel time, the three floors of the work the launches did (issue: one warp
instruction a cycle per scheduler; the multi-function unit: 16 lanes a cycle per SM; DRAM bytes at the copy rate),
the largest of them summed over the launches, and the time's fraction of it. GEMMs are bound by the matrix rate,
which these counters do not give: their floor is the model flops (6 · parameters · tokens) at the matrix rate of the
step's precision, both read from bench_train_cuda's result line in the same CSV (its params, tokens/step and
gemm_TF/s), or given by --gemm-tflop and --matrix-rate; the DRAM floor where that is larger. The last line gives the
model-flops utilization of the kernels' time and of the step at the floors (the gaps between kernels left out).

Usage: step_limits.py CSV [--steps N] [--sms 132] [--copy-rate 4.22] [--gemm-tflop F --matrix-rate R]
"""
import argparse
import collections
import csv
import re
import sys

FAMILIES = [  # first match wins
    ("scan backward", r"backward_state_split|backward_block|backward_recurrent|chunk_state_gradient"),
    ("scan forward", r"forward_quad|forward_state_split|forward_block|forward_recurrent"),
    ("GEMMs", r"nvjet|cutlass|gemm|splitKreduce|small_gemm"),
    ("conv1d", r"conv_"),
    ("RMSNorm", r"rmsnorm"),
]
METRICS = {
    "gpu__time_duration.sum": "time",
    "sm__cycles_elapsed.avg": "cycles",
    "sm__inst_executed.sum": "inst",
    "sm__inst_executed_pipe_xu.sum": "xu",
    "dram__bytes.sum": "bytes",
}
SCALE = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1.0,
         "second": 1.0, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "inst": 1.0, "cycle": 1.0, "": 1.0}


def family_of(name):
    for family, pattern in FAMILIES:
        if re.search(pattern, name):
            return family
    return "the rest"


def read_launches(path):
    """{launch id: {"name": kernel, metric key: value in seconds, bytes, instructions or cycles}}"""
    launches, header = collections.OrderedDict(), None
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if "Kernel Name" in row and "Metric Value" in row:
                header = row
                continue
            if header is None or len(row) != len(header):
                continue
            d = dict(zip(header, row))
            key = METRICS.get(d["Metric Name"])
            if key is None:
                continue
            unit = d["Metric Unit"]
            if unit not in SCALE:
                sys.exit(f"step_limits: unknown unit '{unit}' of {d['Metric Name']}")
            launch = launches.setdefault(d["ID"], {"name": d["Kernel Name"]})
            launch[key] = float(d["Metric Value"].replace(",", "")) * SCALE[unit]
    missing = {k for launch in launches.values() for k in METRICS.values() if k not in launch}
    if missing:
        sys.exit(f"step_limits: launches without {', '.join(sorted(missing))}: profile with every metric of METRICS")
    return launches


def benchmark_line(path):
    """(model TFLOP of a step, matrix TFLOP/s) from bench_train_cuda's result line, or None."""
    text = open(path, errors="replace").read()
    work = re.search(r"(\d+) params, (\d+) tokens/step", text)
    rate = re.search(r"gemm_TF/s=([0-9.]+)", text)
    if not (work and rate):
        return None
    return 6.0 * float(work.group(1)) * float(work.group(2)) * 1e-12, float(rate.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=1, help="steps the CSV holds (the table is per step)")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--copy-rate", type=float, default=4.22, help="TB/s, read + write (cudaMemcpy device to device)")
    ap.add_argument("--gemm-tflop", type=float, help="model flops of the step's GEMMs, TFLOP")
    ap.add_argument("--matrix-rate", type=float, help="TFLOP/s of the GEMMs' precision, measured")
    a = ap.parse_args()
    launches = read_launches(a.csv)
    if not launches:
        sys.exit("step_limits: no launches with the expected metrics in " + a.csv)
    if not (a.gemm_tflop and a.matrix_rate):
        found = benchmark_line(a.csv)
        if found:
            a.gemm_tflop, a.matrix_rate = a.gemm_tflop or found[0], a.matrix_rate or found[1]

    rows = collections.OrderedDict((f, collections.Counter()) for f, _ in FAMILIES + [("the rest", "")])
    bound_time = collections.defaultdict(collections.Counter)  # family -> the time of launches by their bound
    for launch in launches.values():
        fam = family_of(launch["name"])
        clock = launch["cycles"] / launch["time"]  # the SM clock over the launch
        floors = {
            "issue": launch["inst"] / (4 * a.sms * clock),
            "MUFU": launch["xu"] / (0.5 * a.sms * clock),
            "DRAM": launch["bytes"] / (a.copy_rate * 1e12),
        }
        bound = max(floors, key=floors.get)
        r = rows[fam]
        r["time"] += launch["time"]
        r["launches"] += 1
        for k, v in floors.items():
            r[k] += v
        r["floor"] += floors[bound]
        bound_time[fam][bound] += launch["time"]

    per_step = 1e3 / a.steps  # seconds to ms a step
    print(f"| part | launches a step | kernel time | issue floor | MUFU floor | DRAM floor | bound (by time) | floor | at |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    total_time = total_floor = 0.0
    for fam, r in rows.items():
        if r["launches"] == 0:
            continue
        floor, bound = r["floor"], bound_time[fam].most_common(1)[0][0]
        if fam == "GEMMs" and a.gemm_tflop and a.matrix_rate and a.gemm_tflop / a.matrix_rate > r["DRAM"] / a.steps:
            floor, bound = a.gemm_tflop * a.steps / a.matrix_rate, "matrix rate"
        total_time += r["time"]
        total_floor += floor
        print(f"| {fam} | {r['launches'] / a.steps:.0f} | {r['time'] * per_step:.2f} ms | {r['issue'] * per_step:.2f} | "
              f"{r['MUFU'] * per_step:.2f} | {r['DRAM'] * per_step:.2f} | {bound} | {floor * per_step:.2f} ms | "
              f"{100 * floor / r['time']:.0f} % |")
    print(f"| **all** | {len(launches) / a.steps:.0f} | **{total_time * per_step:.2f} ms** | | | | | "
          f"**{total_floor * per_step:.2f} ms** | **{100 * total_floor / total_time:.0f} %** |")
    gemms = collections.defaultdict(collections.Counter)  # the GEMM family by kernel: which of them lose the time
    for launch in launches.values():
        if family_of(launch["name"]) == "GEMMs":
            g = gemms[launch["name"].split("(")[0][:70]]
            g["launches"] += 1
            g["time"] += launch["time"]
            g["bytes"] += launch["bytes"]
    print("\n| GEMM kernel | launches a step | time | µs each | DRAM GB | of the copy rate |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, g in sorted(gemms.items(), key=lambda kv: -kv[1]["time"]):
        print(f"| `{name}` | {g['launches'] / a.steps:.0f} | {g['time'] * per_step:.2f} ms | "
              f"{1e6 * g['time'] / g['launches']:.1f} | {g['bytes'] * 1e-9 / a.steps:.2f} | "
              f"{100 * g['bytes'] / (g['time'] * a.copy_rate * 1e12):.0f} % |")
    if not (a.gemm_tflop and a.matrix_rate):
        print("(GEMMs against issue and DRAM only: give --gemm-tflop and --matrix-rate for their matrix-rate floor)")
        return
    mfu = lambda seconds: 100 * a.gemm_tflop * a.steps / (seconds * a.matrix_rate)
    print(f"model flops {a.gemm_tflop:.2f} TFLOP a step at {a.matrix_rate:.0f} TFLOP/s: MFU {mfu(total_time):.1f} % over "
          f"the kernels' time, {mfu(total_floor):.1f} % with every part at its floor")


if __name__ == "__main__":
    main()
