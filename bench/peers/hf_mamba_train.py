#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Training-step throughput of Hugging Face transformers' MambaForCausalLM, for comparison with ssmlen's CUDA
training step on the same GPU. Without the mamba_ssm / causal_conv1d kernels installed, transformers runs its
pure-PyTorch ("slow") path; the script reports which path it used.

  python3 bench/peers/hf_mamba_train.py --batch 32 --seq-len 176 --steps 10 [--dtype bf16] [--json out.json]

Defaults are the paper's configuration (24 layers, d_model 768, d_state 16, expand 2) on addition-like sequences.
Prints tokens/s, step time, model-flops utilization against a bf16 matmul measured in the same run, and memory.
bench/peers/compare_hf.py runs this beside ssmlen's own training step and prints both in one table.
"""
import argparse
import gc
import json
import sys
import time

_BF16_RATE = None


def bf16_matmul_rate(torch, dev):
    """FLOP/s of a bf16 8192^3 matmul on random operands, measured once per process: the MFU denominator."""
    global _BF16_RATE
    if _BF16_RATE is None:
        n, reps = 8192, 20
        m1 = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        m2 = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            m1 @ m2
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            m1 @ m2
        torch.cuda.synchronize()
        _BF16_RATE = 2 * n**3 * reps / (time.perf_counter() - t0)
        del m1, m2
        torch.cuda.empty_cache()
    return _BF16_RATE


def measure(batch, seq_len, steps=10, dtype="fp32", layers=24, d_model=768, d_state=16, vocab=32):
    """Builds the model, times `steps` training steps after 2 warm-up steps and returns the result as a dict.
    Running out of device memory is a result (out_of_memory: true), not an error; the memory is freed either way."""
    import torch
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    if not torch.cuda.is_available():
        sys.exit("hf_mamba_train: no CUDA device")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    fast = False
    try:
        from transformers.models.mamba import modeling_mamba as mm
        fast = bool(getattr(mm, "is_fast_path_available", False))
    except Exception:  # noqa: BLE001 - only informative
        pass

    cfg = MambaConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, state_size=d_state,
                      expand=2, conv_kernel=4, tie_word_embeddings=True)
    model = MambaForCausalLM(cfg).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98), weight_decay=0.01)
    x = torch.randint(0, vocab, (batch, seq_len), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    device_gb = float("nan")
    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        free, total = torch.cuda.mem_get_info()
        device_gb = (total - free) / 1e9  # as ssmlen's device_GB: everything this process holds on the device
        oom = False
    except torch.cuda.OutOfMemoryError:
        dt, oom = float("nan"), True
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    del model, opt, x
    gc.collect()
    torch.cuda.empty_cache()

    rate = bf16_matmul_rate(torch, dev)
    tokens = batch * seq_len
    return {
        "peer": "transformers.MambaForCausalLM",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "fast_path": fast,
        "gpu": torch.cuda.get_device_name(),
        "parameters": params,
        "vocab": vocab,
        "batch": batch,
        "seq_len": seq_len,
        "dtype": dtype,
        "out_of_memory": oom,
        "step_s": dt,
        "tokens_per_s": tokens / dt if not oom else 0.0,
        "mfu": 6 * params * tokens / dt / rate if not oom else 0.0,
        "bf16_matmul_tflops": rate / 1e12,
        "peak_memory_gib": peak_gib,
        "device_gb": device_gb,
    }


def describe(r):
    head = (f"{r['peer']} ({'fast' if r['fast_path'] else 'pure-PyTorch'} path, {r['dtype']}), "
            f"{r['parameters'] / 1e6:.1f}M parameters, batch {r['batch']} x {r['seq_len']}: ")
    if r["out_of_memory"]:
        return head + f"out of memory (peak {r['peak_memory_gib']:.1f} GiB allocated before it)"
    return head + (f"{r['step_s'] * 1e3:.1f} ms/step, {r['tokens_per_s']:.0f} tokens/s, MFU {100 * r['mfu']:.2f}% "
                   f"(bf16 matmul {r['bf16_matmul_tflops']:.0f} TFLOP/s), peak {r['peak_memory_gib']:.1f} GiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=176, help="tokens per sequence (176: a 5-digit addition trace)")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="autocast dtype of the forward")
    ap.add_argument("--json", help="also write the result as JSON here")
    a = ap.parse_args()
    r = measure(a.batch, a.seq_len, a.steps, a.dtype, a.layers, a.d_model, a.d_state, a.vocab)
    print(describe(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
