#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reference fixtures for ssmlen's Mamba-1 language model.

An independent, plain-PyTorch implementation of the mamba_ssm `MambaLMHeadModel` (Mamba-1 mixer, RMSNorm, residual
stream in float, no fused kernels) with tiny odd sizes and random but realistic parameters. For each configuration it
writes, into tests/fixtures/:

  <name>.safetensors   the parameters as F32, named like mamba_ssm (`backbone.layers.0.mixer.in_proj.weight`, ...),
                       with no library metadata (`__metadata__` is {"format": "pt"}, like a PyTorch export);
  <name>.logits.json   {"config": {...}, "tokens": [...], "logits": [[...]] (L x V),
                        "hidden": [[[...]]] (the residual stream after each layer, n_layer x L x D)},
                       computed in float64 from the float32 values stored in the safetensors file.

Configurations: tiny_mamba (dt_rank 1, lm head tied to the embedding: no `lm_head.weight`), tiny_mamba_untied
(its own `lm_head.weight`), tiny_mamba_r3 (dt_rank 3, tied). The output is deterministic for a given torch version.

Regenerate, from the repository root, with Debian's Python (it has torch; no other package is needed):

    /usr/bin/python3 tests/make_mamba_fixture.py

Optional, where the packages exist (not needed to regenerate the Mamba fixtures):
    --check-hf          compare the logits with Hugging Face transformers' MambaForCausalLM (its slow path)
    --check-files       load the written files with the `safetensors` package
    --reference-writer  also write reference_writer.safetensors with the `safetensors` package's own writer: tensors
                        of several dtypes whose values follow simple formulas (see write_reference_writer_fixture)
"""

import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

CONFIGS = [
    # name, dt_rank, tied, seed
    ("tiny_mamba", 1, True, 20240601),
    ("tiny_mamba_untied", 1, False, 20240602),
    ("tiny_mamba_r3", 3, True, 20240603),
]
VOCAB, D_MODEL, N_LAYER, D_STATE, D_CONV, EXPAND, SEQ_LEN, EPS = 13, 12, 2, 5, 4, 2, 23, 1e-5


def make_params(cfg, gen):
    """Random float32 parameters shaped and named like mamba_ssm's MambaLMHeadModel."""
    V, D, N, K, R = cfg["vocab_size"], cfg["d_model"], cfg["d_state"], cfg["d_conv"], cfg["dt_rank"]
    ED = cfg["d_inner"]

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    def uniform(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float32)

    p = {"backbone.embedding.weight": randn(V, D)}
    for i in range(cfg["n_layer"]):
        m = f"backbone.layers.{i}.mixer."
        p[f"backbone.layers.{i}.norm.weight"] = 1 + 0.2 * randn(D)
        p[m + "in_proj.weight"] = randn(2 * ED, D) / math.sqrt(D)
        p[m + "conv1d.weight"] = randn(ED, 1, K) / math.sqrt(K)
        p[m + "conv1d.bias"] = 0.3 * randn(ED)
        p[m + "x_proj.weight"] = randn(R + 2 * N, ED) / math.sqrt(ED)
        p[m + "dt_proj.weight"] = (2 * uniform(ED, R) - 1) / math.sqrt(R)
        # mamba_ssm's dt initialization (log-uniform step, bias = softplus^-1(step)), over a wider range
        dt = torch.exp(uniform(ED) * (math.log(0.5) - math.log(0.005)) + math.log(0.005))
        p[m + "dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
        p[m + "A_log"] = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(ED, 1) + 0.1 * randn(ED, N)
        p[m + "D"] = 1 + 0.3 * randn(ED)
        p[m + "out_proj.weight"] = randn(D, ED) / math.sqrt(ED)
    p["backbone.norm_f.weight"] = 1 + 0.2 * randn(D)
    if not cfg["tie_embeddings"]:
        p["lm_head.weight"] = randn(V, D)
    return {k: v.contiguous() for k, v in p.items()}


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mixer(u, p, cfg):
    """The Mamba-1 mixer on one sequence u [L, D], float64, written out step by step."""
    L = u.shape[0]
    ED, N, K, R = cfg["d_inner"], cfg["d_state"], cfg["d_conv"], cfg["dt_rank"]
    xz = u @ p["in_proj.weight"].T  # [L, 2ED]
    x, z = xz[:, :ED], xz[:, ED:]  # x first, then the gate z
    # causal depthwise convolution: left-pad K-1 zeros; out[t] = bias + sum_k w[k] * x[t - (K-1) + k]
    w = p["conv1d.weight"][:, 0, :]  # [ED, K]
    xpad = torch.cat([torch.zeros(K - 1, ED, dtype=x.dtype), x])  # [L+K-1, ED]
    conv = p["conv1d.bias"] + sum(w[:, k] * xpad[k : k + L] for k in range(K))  # [L, ED]
    # the same through torch's conv1d, as mamba_ssm's reference path computes it
    conv_ref = F.conv1d(x.T[None], p["conv1d.weight"], p["conv1d.bias"], padding=K - 1, groups=ED)[0, :, :L].T
    assert torch.allclose(conv, conv_ref, rtol=1e-12, atol=1e-12)
    x = F.silu(conv)  # [L, ED]
    dbc = x @ p["x_proj.weight"].T  # [L, R + 2N]
    dt, B, C = dbc[:, :R], dbc[:, R : R + N], dbc[:, R + N :]
    dt = F.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # [L, ED]
    A = -torch.exp(p["A_log"])  # [ED, N]
    h = torch.zeros(ED, N, dtype=x.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dt[t, :, None] * A) * h + dt[t, :, None] * B[t][None, :] * x[t, :, None]  # [ED, N]
        ys.append(h @ C[t] + p["D"] * x[t])  # [ED]
    y = torch.stack(ys) * F.silu(z)  # [L, ED]
    return y @ p["out_proj.weight"].T  # [L, D]


def forward(params, tokens, cfg):
    """Logits [L, V] and the residual stream after each layer, all in float64."""
    p = {k: v.double() for k, v in params.items()}
    h = p["backbone.embedding.weight"][tokens]  # [L, D]
    hidden = []
    for i in range(cfg["n_layer"]):
        pre = f"backbone.layers.{i}."
        mp = {k[len(pre + "mixer.") :]: v for k, v in p.items() if k.startswith(pre + "mixer.")}
        h = h + mixer(rms_norm(h, p[pre + "norm.weight"], cfg["norm_eps"]), mp, cfg)
        hidden.append(h)
    h = rms_norm(h, p["backbone.norm_f.weight"], cfg["norm_eps"])
    head = p["backbone.embedding.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return h @ head.T, hidden


def scan_quadratic_check(params, tokens, cfg):
    """Recomputes layer 0's scan output in its unrolled form, y_t = sum_s C_t (prod exp(dt A)) dt_s B_s x_s."""
    p = {k: v.double() for k, v in params.items()}
    pre = "backbone.layers.0.mixer."
    ED, N, K, R = cfg["d_inner"], cfg["d_state"], cfg["d_conv"], cfg["dt_rank"]
    u = rms_norm(p["backbone.embedding.weight"][tokens], p["backbone.layers.0.norm.weight"], cfg["norm_eps"])
    L = u.shape[0]
    xz = u @ p[pre + "in_proj.weight"].T
    x, z = xz[:, :ED], xz[:, ED:]
    x = F.silu(
        F.conv1d(x.T[None], p[pre + "conv1d.weight"], p[pre + "conv1d.bias"], padding=K - 1, groups=ED)[0, :, :L].T
    )
    dbc = x @ p[pre + "x_proj.weight"].T
    dt = F.softplus(dbc[:, :R] @ p[pre + "dt_proj.weight"].T + p[pre + "dt_proj.bias"])
    B, C = dbc[:, R : R + N], dbc[:, R + N :]
    logA = dt[:, :, None] * -torch.exp(p[pre + "A_log"])  # [L, ED, N]
    cum = torch.cumsum(logA, 0)  # [L, ED, N]
    y = torch.zeros(L, ED, dtype=torch.float64)
    for t in range(L):
        for s in range(t + 1):
            decay = torch.exp(cum[t] - cum[s])  # prod_{r=s+1..t} exp(dt_r A)
            y[t] += (decay * B[s][None, :] * C[t][None, :]).sum(-1) * dt[s] * x[s]
    y = (y + p[pre + "D"] * x) * F.silu(z)
    expected = y @ p[pre + "out_proj.weight"].T
    got = mixer(u, {k[len(pre) :]: v for k, v in p.items() if k.startswith(pre)}, cfg)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12), (got - expected).abs().max()


def write_safetensors(path, tensors, metadata):
    """The safetensors layout, as the reference writer produces it: compact JSON with __metadata__ first, tensors
    packed in name order (all F32 here), header padded with spaces to a multiple of 8."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        assert t.dtype == torch.float32 and t.is_contiguous()
        data = struct.pack(f"<{t.numel()}f", *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def check_hf(params, tokens, cfg, logits):
    """Compares with transformers' MambaForCausalLM (slow path) in float64."""
    from transformers import MambaConfig, MambaForCausalLM

    hf_cfg = MambaConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["d_model"],
        state_size=cfg["d_state"],
        num_hidden_layers=cfg["n_layer"],
        layer_norm_epsilon=cfg["norm_eps"],
        expand=cfg["expand"],
        conv_kernel=cfg["d_conv"],
        use_bias=False,
        use_conv_bias=True,
        hidden_act="silu",
        time_step_rank=cfg["dt_rank"],
        residual_in_fp32=True,
        tie_word_embeddings=cfg["tie_embeddings"],
        use_mambapy=False,
    )
    model = MambaForCausalLM(hf_cfg).double().eval()
    sd = {k.replace("backbone.embedding.", "backbone.embeddings."): v.double() for k, v in params.items()}
    if cfg["tie_embeddings"]:
        sd["lm_head.weight"] = sd["backbone.embeddings.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    with torch.no_grad():
        hf = model(torch.tensor(tokens)[None]).logits[0].double()
    err = (hf - logits).abs().max().item()
    print(f"  transformers MambaForCausalLM: max |logit difference| = {err:.3e}")
    # transformers' slow path runs parts of the scan in float32
    assert err < 1e-4 * max(1.0, logits.abs().max().item()), err


def check_files(path, params):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
        assert sorted(f.keys()) == sorted(params), f.keys()
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), params[k]), k
    print(f"  safetensors package reads {os.path.basename(path)}: {len(params)} tensors identical")


def write_reference_writer_fixture(out):
    """A file written by safetensors.torch.save_file itself, to check the C++ reader against the format's reference
    writer. Values: f32[i] = i/4 - 1 ([3, 4]); bf16[i] = i/2 - 2 ([10]); f16[i] = i/8 - 1/4 ([2, 3]); f64[i] = i/3
    ([5]); i64[i] = i - 3 ([7]); u8[i] = 250 + i ([5]); empty: F32 [0, 3]; scalar: F32 [] = 2.5."""
    from safetensors.torch import save_file

    ar = torch.arange
    tensors = {
        "f32": (ar(12, dtype=torch.float32) / 4 - 1).reshape(3, 4),
        "bf16": (ar(10, dtype=torch.float32) / 2 - 2).to(torch.bfloat16),
        "f16": (ar(6, dtype=torch.float32) / 8 - 0.25).to(torch.float16).reshape(2, 3),
        "f64": ar(5, dtype=torch.float64) / 3,
        "i64": ar(7, dtype=torch.int64) - 3,
        "u8": ar(5, dtype=torch.uint8) + 250,
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
    }
    path = os.path.join(out, "reference_writer.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "writer": "safetensors.torch.save_file"})
    print(f"reference_writer.safetensors: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--check-hf", action="store_true")
    ap.add_argument("--check-files", action="store_true")
    ap.add_argument("--reference-writer", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # identical reductions on every machine

    for name, dt_rank, tied, seed in CONFIGS:
        cfg = {
            "vocab_size": VOCAB,
            "d_model": D_MODEL,
            "n_layer": N_LAYER,
            "d_state": D_STATE,
            "d_conv": D_CONV,
            "expand": EXPAND,
            "d_inner": EXPAND * D_MODEL,
            "dt_rank": dt_rank,
            "tie_embeddings": tied,
            "norm_eps": EPS,
            "seed": seed,
        }
        gen = torch.Generator().manual_seed(seed)
        params = make_params(cfg, gen)
        tokens = torch.randint(0, VOCAB, (SEQ_LEN,), generator=gen).tolist()
        scan_quadratic_check(params, tokens, cfg)
        logits, hidden = forward(params, tokens, cfg)
        assert logits.shape == (SEQ_LEN, VOCAB) and torch.isfinite(logits).all()

        st_path = os.path.join(args.out, name + ".safetensors")
        write_safetensors(st_path, params, {"format": "pt"})
        result = {
            "config": dict(cfg, safetensors=name + ".safetensors"),
            "tokens": tokens,
            "logits": logits.tolist(),
            "hidden": [h.tolist() for h in hidden],
        }
        json_path = os.path.join(args.out, name + ".logits.json")
        tmp = f"{json_path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(result, f, separators=(",", ":"))
            f.write("\n")
        os.replace(tmp, json_path)
        print(f"{name}: {len(params)} tensors, {os.path.getsize(st_path)} + {os.path.getsize(json_path)} bytes")
        if args.check_hf:
            check_hf(params, tokens, cfg, logits)
        if args.check_files:
            check_files(st_path, params)
    if args.reference_writer:
        write_reference_writer_fixture(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
