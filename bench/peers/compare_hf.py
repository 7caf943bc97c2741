#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""ssmlen's CUDA training step beside Hugging Face transformers' MambaForCausalLM, in one run on one GPU.

  python3 bench/peers/compare_hf.py --bench path/to/bench_train_cuda [--hf-steps 3] [--json out.json]

First runs ssmlen's `peer_fp32` and `peer_bf16` training-step benchmarks (bench/bench_train_cuda.cu: the paper's
model, 24 layers, d_model 768, d_state 16, expand 2, tied embeddings, on batches of random tokens: 32 x 176 and
128 x 176, every target counted), then, in this process, the same model in transformers at each of those shapes and
precisions (bf16: autocast, against ssmlen's bf16 GEMMs with fp32 master weights), with ssmlen's vocabulary so that
the parameter counts match. Prints one table: step time, tokens/s, model-flops utilization (6 * parameters * tokens/s
over the bf16 matrix rate that ssmlen's benchmark measured in this run, for both), device memory in use after the
steps, and how many times faster ssmlen's step is. Running out of device memory is reported as such.
"""
import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_mamba_train  # noqa: E402

NAME = re.compile(r"^bm_train_step/peer_(fp32|bf16)/batch:(\d+)/length:(\d+)")


def run_ssmlen(bench):
    """Runs the peer benchmarks; returns [{dtype, batch, seq_len, step_ms, tok/s, ...counters}] in their order."""
    cmd = [bench, "--benchmark_filter=^bm_train_step/peer_", "--benchmark_format=json"]
    print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"compare_hf: {bench} exited with status {proc.returncode}")
    rows = []
    for b in json.loads(proc.stdout)["benchmarks"]:
        m = NAME.match(b["name"])
        if m is None:
            continue
        if "error_message" in b:
            sys.exit(f"compare_hf: {b['name']}: {b['error_message']}")
        rows.append(dict(b, dtype=m.group(1), batch=int(m.group(2)), seq_len=int(m.group(3))))
    if not rows:
        sys.exit(f"compare_hf: {bench} ran no peer benchmarks (is it built from this checkout?)")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="ssmlen's bench_train_cuda executable")
    ap.add_argument("--hf-steps", type=int, default=3, help="timed transformers steps per shape (after 2 warm-up)")
    ap.add_argument("--json", help="also write both sides' results as JSON here")
    a = ap.parse_args()
    if not os.access(a.bench, os.X_OK):
        sys.exit(f"compare_hf: {a.bench} is not an executable file")

    ours = run_ssmlen(a.bench)
    theirs = []
    for r in ours:
        print(f"running transformers: {r['dtype']}, batch {r['batch']} x {r['seq_len']}", file=sys.stderr, flush=True)
        h = hf_mamba_train.measure(r["batch"], r["seq_len"], a.hf_steps, r["dtype"], vocab=int(r["vocab"]))
        print(hf_mamba_train.describe(h), file=sys.stderr, flush=True)
        theirs.append(h)

    print(f"\n{theirs[0]['gpu']}; ssmlen {int(ours[0]['params'])} parameters, transformers {theirs[0]['transformers']} "
          f"({'fast' if theirs[0]['fast_path'] else 'pure-PyTorch'} path) {theirs[0]['parameters']}; bf16 matrix "
          f"rate {ours[0]['bf16_TF/s']:.0f} TFLOP/s (ssmlen's benchmark; torch measured "
          f"{theirs[0]['bf16_matmul_tflops']:.0f} on random operands)\n")
    print("| precision | batch x length | ssmlen ms/step | ssmlen tokens/s | ssmlen MFU | ssmlen device GB "
          "| transformers ms/step | transformers tokens/s | transformers MFU | transformers device GB | ssmlen faster |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, h in zip(ours, theirs):
        rate = r["bf16_TF/s"] * 1e12
        shape = f"{r['batch']} x {r['seq_len']}"
        mine = f"{r['step_ms']:.1f} | {r['tok/s']:.0f} | {100 * r['mfu']:.1f} % | {r['device_GB']:.1f}"
        if h["out_of_memory"]:
            peer = "out of memory | — | — | — | —"
        else:
            mfu = 6 * h["parameters"] * h["tokens_per_s"] / rate
            peer = (f"{h['step_s'] * 1e3:.0f} | {h['tokens_per_s']:.0f} | {100 * mfu:.2f} % | {h['device_gb']:.1f} "
                    f"| {h['step_s'] * 1e3 / r['step_ms']:.0f}x")
        print(f"| {r['dtype']} | {shape} | {mine} | {peer} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"ssmlen": ours, "transformers": theirs}, f, indent=1)


if __name__ == "__main__":
    main()
