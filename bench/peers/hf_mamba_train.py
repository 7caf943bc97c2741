#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Training-step throughput of Hugging Face transformers' MambaForCausalLM, for comparison with ssmlen's CUDA
training step on the same GPU. Without the mamba_ssm / causal_conv1d kernels installed, transformers runs its
pure-PyTorch ("slow") path; the script reports which path it used.

  python3 bench/peers/hf_mamba_train.py --batch 32 --seq-len 176 --steps 10 [--dtype bf16] [--json out.json]

Defaults are the paper's configuration (24 layers, d_model 768, d_state 16, expand 2) on addition-like sequences.
Prints tokens/s, step time, model-flops utilization against a bf16 matmul measured in the same run, and peak memory.
"""
import argparse
import json
import sys
import time


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

    import torch
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    if not torch.cuda.is_available():
        sys.exit("hf_mamba_train: no CUDA device")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=a.vocab, hidden_size=a.d_model, num_hidden_layers=a.layers, state_size=a.d_state,
                      expand=2, conv_kernel=4, tie_word_embeddings=True)
    model = MambaForCausalLM(cfg).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98), weight_decay=0.01)
    fast = False
    try:
        from transformers.models.mamba import modeling_mamba as mm
        fast = bool(getattr(mm, "is_fast_path_available", False))
    except Exception:  # noqa: BLE001 - only informative
        pass

    x = torch.randint(0, a.vocab, (a.batch, a.seq_len), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / a.steps
        oom = False
    except torch.cuda.OutOfMemoryError:
        dt, oom = float("nan"), True

    # The bf16 matrix rate of this GPU, measured now: the MFU denominator.
    n = 8192
    m1 = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    m2 = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        m1 @ m2
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        m1 @ m2
    torch.cuda.synchronize()
    bf16_rate = 2 * n**3 * reps / (time.perf_counter() - t0)

    tokens = a.batch * a.seq_len
    out = {
        "peer": "transformers.MambaForCausalLM",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "fast_path": fast,
        "gpu": torch.cuda.get_device_name(),
        "parameters": params,
        "batch": a.batch,
        "seq_len": a.seq_len,
        "dtype": a.dtype,
        "out_of_memory": oom,
        "step_s": dt,
        "tokens_per_s": tokens / dt if not oom else 0.0,
        "mfu": 6 * params * tokens / dt / bf16_rate if not oom else 0.0,
        "bf16_matmul_tflops": bf16_rate / 1e12,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(f"{out['peer']} ({'fast' if fast else 'pure-PyTorch'} path, {a.dtype}), {params / 1e6:.1f}M parameters, "
          f"batch {a.batch} x {a.seq_len}: " + ("out of memory" if oom else
          f"{dt * 1e3:.1f} ms/step, {out['tokens_per_s']:.0f} tokens/s, MFU {100 * out['mfu']:.2f}% "
          f"(bf16 matmul {out['bf16_matmul_tflops']:.0f} TFLOP/s), peak {out['peak_memory_gib']:.1f} GiB"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
