// SPDX-License-Identifier: Apache-2.0
//! @file selective_scan.hpp
//! The Mamba-1 selective scan on the host, per channel d and state n:
//!   h_t[n, d] = exp(dt_t[d] A[n, d]) h_{t-1}[n, d] + dt_t[d] B_t[n] x_t[d]
//!   y_t[d]    = Σ_n C_t[n] h_t[n, d] + D[d] x_t[d]
//! States are stored state-major, [N, ED], so every inner loop runs over the
//! contiguous channel axis and vectorizes. Forward keeps only the state at the
//! start of every checkpoint interval; backward recomputes the states inside an
//! interval from its checkpoint, then walks it in reverse. Optional initial
//! states and gradients through the final states are supported.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/scan/policy.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ssmlen::scan {

template <class T>
struct selective_scan_args {
  sequences const* seqs = nullptr;
  std::int64_t channels = 0;  // ED
  std::int64_t states = 0;    // N
  T const* x = nullptr;       // [T, ED]
  T const* dt = nullptr;      // [T, ED]: Δ, or its pre-activation with dt_softplus
  T const* a = nullptr;       // [N, ED], A = -exp(A_log), transposed
  T const* b = nullptr;       // [T, N], row stride ld_bc
  T const* c = nullptr;       // [T, N], row stride ld_bc
  std::int64_t ld_bc = 0;
  T const* d = nullptr;           // [ED]
  T const* init_state = nullptr;  // [S, N, ED] or null (zeros)
  // Δ = delta_min + softplus(dt + dt_bias[d]) with dt_softplus (dt_bias [ED] or null): the Mamba block's activation
  // done by the scan as it reads dt, so Δ is never written out; the backward's ddt is then ∂L/∂dt, through it.
  // Without dt_softplus, Δ = dt (dt_bias null, delta_min 0).
  bool dt_softplus = false;
  T const* dt_bias = nullptr;
  T delta_min = 0;
};

//! Throws unless the Δ fields of `a` describe one of the two readings of dt above.
template <class T>
void check_delta_args(selective_scan_args<T> const& a) {
  check(a.dt_softplus || (a.dt_bias == nullptr && a.delta_min == T(0)),
        "selective scan: dt_bias and delta_min apply only with dt_softplus");
  check(!(a.delta_min < T(0)), "selective scan: delta_min must be non-negative");
}

template <class T>
struct selective_scan_grads {
  T const* dy = nullptr;             // [T, ED]
  T const* d_final_state = nullptr;  // [S, N, ED] or null
  T* dx = nullptr;                   // [T, ED], written
  T* ddt = nullptr;                  // [T, ED], written
  T* db = nullptr;                   // [T, N], row stride ld_dbc, written
  T* dc = nullptr;                   // [T, N], row stride ld_dbc, written
  std::int64_t ld_dbc = 0;
  T* da = nullptr;            // [N, ED], accumulated
  T* dd = nullptr;            // [ED], accumulated
  T* d_init_state = nullptr;  // [S, N, ED] or null, written
  T* d_dt_bias = nullptr;     // [ED] or null, accumulated: Σ over tokens of ddt, the gradient of a bias added to dt
};

//! Where each sequence's checkpoints start in the checkpoint buffer ([total, N, ED]).
inline std::vector<std::int64_t> checkpoint_offsets(sequences const& seqs, std::int64_t interval) {
  std::vector<std::int64_t> off(static_cast<std::size_t>(seqs.count()) + 1, 0);
  for (std::int64_t s = 0; s < seqs.count(); ++s) {
    off[static_cast<std::size_t>(s) + 1] =
        off[static_cast<std::size_t>(s)] + (seqs.length(s) + interval - 1) / interval;
  }
  return off;
}

namespace detail {

//! Scans tokens [t_begin, t_end) from state h ([N, ED], updated in place), writing y (or adding when accumulate_y).
template <class T>
void scan_tokens(selective_scan_args<T> const& a, std::int64_t t_begin, std::int64_t t_end, T* h, T* y) {
  std::int64_t const ed = a.channels;
  std::vector<T> dtx(static_cast<std::size_t>(ed));
  for (std::int64_t t = t_begin; t < t_end; ++t) {
    T const* xt = a.x + t * ed;
    T const* dtt = a.dt + t * ed;
    T* yt = y + t * ed;
    for (std::int64_t d = 0; d < ed; ++d) {
      dtx[static_cast<std::size_t>(d)] = dtt[d] * xt[d];
      yt[d] = a.d[d] * xt[d];
    }
    for (std::int64_t n = 0; n < a.states; ++n) {
      T const bn = a.b[t * a.ld_bc + n], cn = a.c[t * a.ld_bc + n];
      T const* an = a.a + n * ed;
      T* hn = h + n * ed;
      for (std::int64_t d = 0; d < ed; ++d) {
        hn[d] = exp_of(dtt[d] * an[d]) * hn[d] + dtx[static_cast<std::size_t>(d)] * bn;
        yt[d] += hn[d] * cn;
      }
    }
  }
}

template <class T>
void load_state(selective_scan_args<T> const& a, std::int64_t s, T* h) {
  std::int64_t const size = a.channels * a.states;
  if (a.init_state != nullptr) {
    std::copy(a.init_state + s * size, a.init_state + (s + 1) * size, h);
  } else {
    std::fill(h, h + size, T(0));
  }
}

//! With a.dt_softplus: Δ = delta_min + softplus(dt + bias) written out ([T, ED]) and args that read it as plain Δ;
//! `slope` gets ∂Δ/∂dt = sigmoid(dt + bias) when asked for. The host scans apply the activation this way, once.
template <class T>
struct plain_delta {
  std::vector<T> dt, slope;  // [T, ED]
  selective_scan_args<T> args;

  plain_delta(selective_scan_args<T> const& a, bool with_slope) : args(a) {
    check_delta_args(a);
    std::int64_t const ed = a.channels, rows = a.seqs->tokens();
    dt.resize(static_cast<std::size_t>(rows * ed));
    slope.resize(with_slope ? dt.size() : 0);
    for (std::int64_t t = 0; t < rows; ++t) {
      for (std::int64_t d = 0; d < ed; ++d) {
        auto const i = static_cast<std::size_t>(t * ed + d);
        T const pre = a.dt[i] + (a.dt_bias != nullptr ? a.dt_bias[d] : T(0));
        dt[i] = a.delta_min + softplus(pre);
        if (with_slope) {
          slope[i] = sigmoid(pre);
        }
      }
    }
    args.dt = dt.data();
    args.dt_softplus = false;
    args.dt_bias = nullptr;
    args.delta_min = T(0);
  }
  plain_delta(plain_delta const&) = delete;  // args points into dt
  plain_delta& operator=(plain_delta const&) = delete;
};

}  // namespace detail

//! Forward, one sequential pass per sequence. checkpoints: [Σ_s ceil(len_s / 64), N, ED].
template <class T>
void selective_scan_forward(recurrent, backends::host const& be, selective_scan_args<T> const& a, T* y, T* checkpoints,
                            T* final_state) {
  if (a.dt_softplus) {
    detail::plain_delta<T> const plain(a, false);
    selective_scan_forward(recurrent{}, be, plain.args, y, checkpoints, final_state);
    return;
  }
  check_delta_args(a);
  constexpr std::int64_t interval = recurrent::checkpoint_interval;
  std::int64_t const size = a.channels * a.states;
  auto const offsets = checkpoint_offsets(*a.seqs, interval);
  be.parallel_for_uneven(a.seqs->count(), [&](std::int64_t s) {
    std::vector<T> h(static_cast<std::size_t>(size));
    detail::load_state(a, s, h.data());
    std::int64_t const t0 = a.seqs->begin(s), t1 = a.seqs->end(s);
    for (std::int64_t k = 0, t = t0; t < t1; ++k, t += interval) {
      if (checkpoints != nullptr) {
        std::copy(h.begin(), h.end(), checkpoints + (offsets[static_cast<std::size_t>(s)] + k) * size);
      }
      detail::scan_tokens(a, t, std::min(t1, t + interval), h.data(), y);
    }
    if (final_state != nullptr) {
      std::copy(h.begin(), h.end(), final_state + s * size);
    }
  });
}

//! Forward in three phases: (1) every chunk of every sequence scans from a zero state, in parallel;
//! (2) per sequence, chunk-end states are carried across chunks: H_c = exp(A Σdt_c) H_{c-1} + h_c;
//! (3) every chunk adds the contribution of its carried-in state: y_t += Σ_n C_t exp(A cumdt_t) H_{c-1}.
template <class T, std::int64_t C>
void selective_scan_forward(chunked<C>, backends::host const& be, selective_scan_args<T> const& a, T* y, T* checkpoints,
                            T* final_state) {
  if (a.dt_softplus) {
    detail::plain_delta<T> const plain(a, false);
    selective_scan_forward(chunked<C>{}, be, plain.args, y, checkpoints, final_state);
    return;
  }
  check_delta_args(a);
  std::int64_t const ed = a.channels, size = a.channels * a.states;
  auto const offsets = checkpoint_offsets(*a.seqs, C);
  std::int64_t const n_chunks = offsets.back();
  std::vector<std::int64_t> chunk_seq(static_cast<std::size_t>(n_chunks));
  for (std::int64_t s = 0; s < a.seqs->count(); ++s) {
    for (auto k = offsets[static_cast<std::size_t>(s)]; k < offsets[static_cast<std::size_t>(s) + 1]; ++k) {
      chunk_seq[static_cast<std::size_t>(k)] = s;
    }
  }
  auto chunk_range = [&](std::int64_t k) {
    std::int64_t const s = chunk_seq[static_cast<std::size_t>(k)];
    std::int64_t const t = a.seqs->begin(s) + (k - offsets[static_cast<std::size_t>(s)]) * C;
    return std::pair{t, std::min(a.seqs->end(s), t + C)};
  };
  std::vector<T> local(static_cast<std::size_t>(n_chunks * size));  // [chunks, N, ED]: chunk-end states from zero
  std::vector<T> dt_sum(static_cast<std::size_t>(n_chunks * ed));   // [chunks, ED]
  be.parallel_for(n_chunks, [&](std::int64_t k) {
    auto const [t0, t1] = chunk_range(k);
    T* h = local.data() + k * size;
    std::fill(h, h + size, T(0));
    detail::scan_tokens(a, t0, t1, h, y);
    T* sum = dt_sum.data() + k * ed;
    std::fill(sum, sum + ed, T(0));
    for (std::int64_t t = t0; t < t1; ++t) {
      for (std::int64_t d = 0; d < ed; ++d) {
        sum[d] += a.dt[t * ed + d];
      }
    }
  });
  std::vector<T> carried(static_cast<std::size_t>(n_chunks * size));  // [chunks, N, ED]: state entering each chunk
  be.parallel_for_uneven(a.seqs->count(), [&](std::int64_t s) {
    std::vector<T> h(static_cast<std::size_t>(size));
    detail::load_state(a, s, h.data());
    for (auto k = offsets[static_cast<std::size_t>(s)]; k < offsets[static_cast<std::size_t>(s) + 1]; ++k) {
      std::copy(h.begin(), h.end(), carried.begin() + k * size);
      T const* hl = local.data() + k * size;
      T const* sum = dt_sum.data() + k * ed;
      for (std::int64_t i = 0; i < size; ++i) {
        h[static_cast<std::size_t>(i)] = exp_of(a.a[i] * sum[i % ed]) * h[static_cast<std::size_t>(i)] + hl[i];
      }
    }
    if (final_state != nullptr) {
      std::copy(h.begin(), h.end(), final_state + s * size);
    }
  });
  be.parallel_for(n_chunks, [&](std::int64_t k) {
    std::int64_t const s = chunk_seq[static_cast<std::size_t>(k)];
    if (k == offsets[static_cast<std::size_t>(s)] && a.init_state == nullptr) {
      return;  // the first chunk starts from zero: nothing to add
    }
    auto const [t0, t1] = chunk_range(k);
    T const* hin = carried.data() + k * size;
    std::vector<T> cum(static_cast<std::size_t>(ed), T(0));
    for (std::int64_t t = t0; t < t1; ++t) {
      T* yt = y + t * ed;
      for (std::int64_t d = 0; d < ed; ++d) {
        cum[static_cast<std::size_t>(d)] += a.dt[t * ed + d];
      }
      for (std::int64_t n = 0; n < a.states; ++n) {
        T const cn = a.c[t * a.ld_bc + n];
        T const* an = a.a + n * ed;
        T const* hn = hin + n * ed;
        for (std::int64_t d = 0; d < ed; ++d) {
          yt[d] += cn * exp_of(an[d] * cum[static_cast<std::size_t>(d)]) * hn[d];
        }
      }
    }
  });
  if (checkpoints != nullptr) {
    std::copy(carried.begin(), carried.end(), checkpoints);
  }
}

namespace detail {

//! The backward works on tiles of one SIMD vector of channels (32 bytes), read in place from the [T, ED] arrays,
//! and on blocks of 4 states, whose states, adjoints and dA stay in registers while a tile walks an interval.
//! Channels past the last whole tile go one at a time, and so do states past the last whole block.
template <class T>
inline constexpr std::int64_t tile_lanes = 32 / sizeof(T);
inline constexpr std::int64_t state_block = 4;

//! Channels [c0, c0 + W) of one interval of a sequence, in place: row i of x, Δ, dy is at i * ed.
template <class T>
struct tile_view {
  T const* x;
  T const* dt;
  T const* dy;
  T const* a;  // A rows: a + n * ed
  T const* b;  // B_t[n] at b[i * ld_bc + n]
  T const* c;
  std::int64_t ed, ld_bc;
  std::int64_t states;  // N
};

//! Recomputes the states [n0, n1) of one tile over `len` tokens from h0 (row n at h0 + n * ed), keeping exp(Δ A)
//! and exp(Δ A) h_{t-1} ([len, N, W] each) for the reverse walk, and adding dy h_t into the dC lane sums
//! dc ([len, N, V]; a tile narrower than V uses its first lanes).
template <std::int64_t W, std::int64_t NB, std::int64_t V, class T>
void recompute_tile(tile_view<T> const& v, std::int64_t len, std::int64_t n0, std::int64_t n1, T const* h0, T* decay,
                    T* decayed, T* dc) {
  std::int64_t const ed = v.ed, ns = v.states;
  for (std::int64_t nb = n0; nb < n1; nb += NB) {
    T h[NB][W];
    for (std::int64_t k = 0; k < NB; ++k) {
      for (std::int64_t l = 0; l < W; ++l) {
        h[k][l] = h0[(nb + k) * ed + l];
      }
    }
    for (std::int64_t i = 0; i < len; ++i) {
      T const* dt = v.dt + i * ed;
      T const* x = v.x + i * ed;
      T const* dy = v.dy + i * ed;
      for (std::int64_t k = 0; k < NB; ++k) {
        std::int64_t const n = nb + k;
        T const bn = v.b[i * v.ld_bc + n];
        T const* an = v.a + n * ed;
        T* dec = decay + (i * ns + n) * W;
        T* hdec = decayed + (i * ns + n) * W;
        T* dcn = dc + (i * ns + n) * V;
#pragma omp simd
        for (std::int64_t l = 0; l < W; ++l) {
          T const e = exp_of(dt[l] * an[l]);
          dec[l] = e;
          hdec[l] = e * h[k][l];
          h[k][l] = e * h[k][l] + dt[l] * x[l] * bn;
          dcn[l] += dy[l] * h[k][l];
        }
      }
    }
  }
}

//! Walks the states [n0, n1) of one tile backward over its interval. dh, da (row n at + n * ed): ∂L/∂h after the
//! last token and dA, updated; db ([len, N, V]): dB lane sums, added to; gb, ga ([len, W]): Σ_n ∂L/∂h_t B_t and
//! Σ_n A ∂L/∂(Δ A), added to.
template <std::int64_t W, std::int64_t NB, std::int64_t V, class T>
void reverse_tile(tile_view<T> const& v, std::int64_t len, std::int64_t n0, std::int64_t n1, T const* decay,
                  T const* decayed, T* dh, T* da, T* db, T* gb, T* ga) {
  std::int64_t const ed = v.ed, ns = v.states;
  for (std::int64_t nb = n0; nb < n1; nb += NB) {
    T g[NB][W], acc[NB][W];
    for (std::int64_t k = 0; k < NB; ++k) {
      for (std::int64_t l = 0; l < W; ++l) {
        g[k][l] = dh[(nb + k) * ed + l];
        acc[k][l] = da[(nb + k) * ed + l];
      }
    }
    for (std::int64_t i = len - 1; i >= 0; --i) {
      T const* dt = v.dt + i * ed;
      T const* x = v.x + i * ed;
      T const* dy = v.dy + i * ed;
      T sb[W] = {}, sa[W] = {};
      for (std::int64_t k = 0; k < NB; ++k) {
        std::int64_t const n = nb + k;
        T const bn = v.b[i * v.ld_bc + n], cn = v.c[i * v.ld_bc + n];
        T const* an = v.a + n * ed;
        T const* dec = decay + (i * ns + n) * W;
        T const* hdec = decayed + (i * ns + n) * W;
        T* dbn = db + (i * ns + n) * V;
#pragma omp simd
        for (std::int64_t l = 0; l < W; ++l) {
          T const gh = g[k][l] + dy[l] * cn;  // total ∂L/∂h_t
          T const q = gh * hdec[l];           // ∂L/∂(Δ A)
          dbn[l] += gh * (dt[l] * x[l]);
          sb[l] += gh * bn;
          acc[k][l] += dt[l] * q;
          sa[l] += an[l] * q;
          g[k][l] = gh * dec[l];  // ∂L/∂h_{t-1} through the recurrence
        }
      }
#pragma omp simd
      for (std::int64_t l = 0; l < W; ++l) {
        gb[i * W + l] += sb[l];
        ga[i * W + l] += sa[l];
      }
    }
    for (std::int64_t k = 0; k < NB; ++k) {
      for (std::int64_t l = 0; l < W; ++l) {
        dh[(nb + k) * ed + l] = g[k][l];
        da[(nb + k) * ed + l] = acc[k][l];
      }
    }
  }
}

//! Per-sequence scratch of the backward.
template <class T>
struct backward_scratch {
  std::vector<T> dh, da;   // [N, ED]: ∂L/∂h after the current token, dA so far
  std::vector<T> dd;       // [ED]
  std::vector<T> decay;    // [interval, N, W]: exp(Δ A) of each token
  std::vector<T> decayed;  // [interval, N, W]: exp(Δ A) h_{t-1}
  std::vector<T> db, dc;   // [interval, N, V]: lane sums over channels
  std::vector<T> gb, ga;   // [interval, W]

  backward_scratch(std::int64_t interval, std::int64_t ed, std::int64_t ns, std::int64_t w, std::int64_t v)
      : dh(static_cast<std::size_t>(ns * ed)), da(dh.size()), dd(static_cast<std::size_t>(ed)),
        decay(static_cast<std::size_t>(interval * ns * w)), decayed(decay.size()),
        db(static_cast<std::size_t>(interval * ns * v)), dc(db.size()), gb(static_cast<std::size_t>(interval * w)),
        ga(gb.size()) {}
};

//! Recomputes and walks back channels [c0, c0 + W) of one interval (tokens [t0, t0 + len)), then writes their dx,
//! dΔ (times ddt_scale when given) and adds to dD.
template <std::int64_t W, class T>
void backward_tile(selective_scan_args<T> const& a, selective_scan_grads<T> const& g, T const* ddt_scale,
                   T const* checkpoint, std::int64_t t0, std::int64_t len, std::int64_t c0, backward_scratch<T>& w) {
  constexpr std::int64_t NB = state_block, V = tile_lanes<T>;
  std::int64_t const ed = a.channels, ns = a.states, whole = ns / NB * NB;
  tile_view<T> const v{a.x + t0 * ed + c0,
                       a.dt + t0 * ed + c0,
                       g.dy + t0 * ed + c0,
                       a.a + c0,
                       a.b + t0 * a.ld_bc,
                       a.c + t0 * a.ld_bc,
                       ed,
                       a.ld_bc,
                       ns};
  T* gb = w.gb.data();
  T* ga = w.ga.data();
  std::fill(gb, gb + len * W, T(0));
  std::fill(ga, ga + len * W, T(0));
  recompute_tile<W, NB, V>(v, len, 0, whole, checkpoint + c0, w.decay.data(), w.decayed.data(), w.dc.data());
  recompute_tile<W, 1, V>(v, len, whole, ns, checkpoint + c0, w.decay.data(), w.decayed.data(), w.dc.data());
  reverse_tile<W, NB, V>(v, len, 0, whole, w.decay.data(), w.decayed.data(), w.dh.data() + c0, w.da.data() + c0,
                         w.db.data(), gb, ga);
  reverse_tile<W, 1, V>(v, len, whole, ns, w.decay.data(), w.decayed.data(), w.dh.data() + c0, w.da.data() + c0,
                        w.db.data(), gb, ga);
  for (std::int64_t i = len - 1; i >= 0; --i) {
    std::int64_t const row = (t0 + i) * ed + c0;
    T const* x = a.x + row;
    T const* dt = a.dt + row;
    T const* dy = g.dy + row;
    T* dx = g.dx + row;
    T* ddt = g.ddt + row;
#pragma omp simd
    for (std::int64_t l = 0; l < W; ++l) {
      dx[l] = dy[l] * a.d[c0 + l] + dt[l] * gb[i * W + l];
      ddt[l] = ga[i * W + l] + x[l] * gb[i * W + l];
      w.dd[static_cast<std::size_t>(c0 + l)] += dy[l] * x[l];
    }
    if (ddt_scale != nullptr) {
#pragma omp simd
      for (std::int64_t l = 0; l < W; ++l) {
        ddt[l] *= ddt_scale[row + l];
      }
    }
  }
}

}  // namespace detail

//! Backward for any policy whose checkpoints are the states at the start of every `interval` tokens.
//! Per sequence and interval (last first), each tile of channels recomputes its states from the checkpoint, keeping
//! exp(Δ A) and exp(Δ A) h_{t-1}, then walks the interval backward: one exponential per element. dB and dC are sums
//! over channels: tiles add into per-lane sums, summed across once per interval.
//! ddt_scale (nullable, [T, ED]): ddt is written multiplied by it, the caller's dΔ/dΔ_pre, saving it a sweep (with
//! a.dt_softplus, on top of the softplus's own slope).
template <class T>
void selective_scan_backward(std::int64_t interval, backends::host const& be, selective_scan_args<T> const& a,
                             T const* checkpoints, selective_scan_grads<T> const& g, T const* ddt_scale = nullptr) {
  if (g.d_dt_bias != nullptr) {  // d_dt_bias[d] += Σ_t ddt[t, d], in token order, after the rest
    auto without = g;
    without.d_dt_bias = nullptr;
    selective_scan_backward(interval, be, a, checkpoints, without, ddt_scale);
    for (std::int64_t t = 0; t < a.seqs->tokens(); ++t) {
      for (std::int64_t d = 0; d < a.channels; ++d) {
        g.d_dt_bias[d] += g.ddt[t * a.channels + d];
      }
    }
    return;
  }
  if (a.dt_softplus) {
    detail::plain_delta<T> plain(a, true);
    if (ddt_scale != nullptr) {
      for (std::size_t i = 0; i < plain.slope.size(); ++i) {
        plain.slope[i] *= ddt_scale[i];
      }
    }
    selective_scan_backward(interval, be, plain.args, checkpoints, g, plain.slope.data());
    return;
  }
  check_delta_args(a);
  constexpr std::int64_t W = detail::tile_lanes<T>;
  std::int64_t const ed = a.channels, ns = a.states, size = ed * ns, whole = ed / W * W;
  std::int64_t const n_seq = a.seqs->count();
  auto const offsets = checkpoint_offsets(*a.seqs, interval);
  std::vector<T> partial(static_cast<std::size_t>(n_seq * (size + ed)), T(0));  // [S, N·ED + ED]: dA, dD per sequence
  be.parallel_for_uneven(n_seq, [&](std::int64_t s) {
    std::int64_t const t0 = a.seqs->begin(s), t1 = a.seqs->end(s);
    detail::backward_scratch<T> w(interval, ed, ns, W, W);
    if (g.d_final_state != nullptr) {
      std::copy_n(g.d_final_state + s * size, size, w.dh.begin());
    }
    std::int64_t const n_ck = offsets[static_cast<std::size_t>(s) + 1] - offsets[static_cast<std::size_t>(s)];
    for (std::int64_t k = n_ck - 1; k >= 0; --k) {
      std::int64_t const c0t = t0 + k * interval, len = std::min(t1, c0t + interval) - c0t;
      T const* ck = checkpoints + (offsets[static_cast<std::size_t>(s)] + k) * size;
      std::fill(w.db.begin(), w.db.end(), T(0));
      std::fill(w.dc.begin(), w.dc.end(), T(0));
      for (std::int64_t c0 = 0; c0 < whole; c0 += W) {
        detail::backward_tile<W>(a, g, ddt_scale, ck, c0t, len, c0, w);
      }
      for (std::int64_t c = whole; c < ed; ++c) {
        detail::backward_tile<1>(a, g, ddt_scale, ck, c0t, len, c, w);
      }
      for (std::int64_t i = 0; i < len; ++i) {  // the lane sums over channels, summed across
        for (std::int64_t n = 0; n < ns; ++n) {
          T const* pb = w.db.data() + (i * ns + n) * W;
          T const* pc = w.dc.data() + (i * ns + n) * W;
          T sb = 0, sc = 0;
          for (std::int64_t l = 0; l < W; ++l) {
            sb += pb[l];
            sc += pc[l];
          }
          g.db[(c0t + i) * g.ld_dbc + n] = sb;
          g.dc[(c0t + i) * g.ld_dbc + n] = sc;
        }
      }
    }
    T* da = partial.data() + s * (size + ed);
    std::copy(w.da.begin(), w.da.end(), da);
    std::copy(w.dd.begin(), w.dd.end(), da + size);
    if (g.d_init_state != nullptr) {
      std::copy(w.dh.begin(), w.dh.end(), g.d_init_state + s * size);
    }
  });
  for (std::int64_t s = 0; s < n_seq; ++s) {  // fixed order: deterministic on any thread count
    T const* p = partial.data() + s * (size + ed);
    for (std::int64_t i = 0; i < size; ++i) {
      g.da[i] += p[i];
    }
    for (std::int64_t d = 0; d < ed; ++d) {
      g.dd[d] += p[size + d];
    }
  }
}

//! One token of one sequence: state h [N, ED] advances in place; x, dt: [ED]; b, c: [N]; y: [ED].
template <class T>
SSMLEN_HD void selective_scan_step_row(std::int64_t ed, std::int64_t ns, T const* x, T const* dt, T const* a,
                                       T const* b, T const* c, T const* dskip, T* h, T* y) {
  for (std::int64_t d = 0; d < ed; ++d) {
    y[d] = dskip[d] * x[d];
  }
  for (std::int64_t n = 0; n < ns; ++n) {
    T const bn = b[n], cn = c[n];
    T const* an = a + n * ed;
    T* hn = h + n * ed;
    for (std::int64_t d = 0; d < ed; ++d) {
      hn[d] = exp_of(dt[d] * an[d]) * hn[d] + dt[d] * x[d] * bn;
      y[d] += hn[d] * cn;
    }
  }
}

//! One token for each of `batch` independent sequences: state [B, N, ED] is advanced in place.
//! x, dt: [B, ED]; b, c: [B, N] (row stride ld_bc); y: [B, ED].
template <class T>
void selective_scan_step(backends::host const& be, std::int64_t batch, std::int64_t ed, std::int64_t ns, T const* x,
                         T const* dt, T const* a, T const* b, T const* c, std::int64_t ld_bc, T const* dskip, T* state,
                         T* y) {
  be.parallel_for(batch, [&](std::int64_t r) {
    selective_scan_step_row(ed, ns, x + r * ed, dt + r * ed, a, b + r * ld_bc, c + r * ld_bc, dskip,
                            state + r * ed * ns, y + r * ed);
  });
}

}  // namespace ssmlen::scan
