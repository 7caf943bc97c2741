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
  T const* dt = nullptr;      // [T, ED], after softplus
  T const* a = nullptr;       // [N, ED], A = -exp(A_log), transposed
  T const* b = nullptr;       // [T, N], row stride ld_bc
  T const* c = nullptr;       // [T, N], row stride ld_bc
  std::int64_t ld_bc = 0;
  T const* d = nullptr;           // [ED]
  T const* init_state = nullptr;  // [S, N, ED] or null (zeros)
};

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

}  // namespace detail

//! Forward, one sequential pass per sequence. checkpoints: [Σ_s ceil(len_s / 64), N, ED].
template <class T>
void selective_scan_forward(recurrent, backends::host const& be, selective_scan_args<T> const& a, T* y, T* checkpoints,
                            T* final_state) {
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

//! Backward for any policy whose checkpoints are the states at the start of every `interval` tokens.
template <class T>
void selective_scan_backward(std::int64_t interval, backends::host const& be, selective_scan_args<T> const& a,
                             T const* checkpoints, selective_scan_grads<T> const& g) {
  std::int64_t const ed = a.channels, ns = a.states, size = ed * ns;
  std::int64_t const n_seq = a.seqs->count();
  auto const offsets = checkpoint_offsets(*a.seqs, interval);
  std::vector<T> partial(static_cast<std::size_t>(n_seq * (size + ed)), T(0));  // [S, N·ED + ED]: dA, dD per sequence
  be.parallel_for_uneven(n_seq, [&](std::int64_t s) {
    std::int64_t const t0 = a.seqs->begin(s), t1 = a.seqs->end(s);
    std::vector<T> dh(static_cast<std::size_t>(size), T(0));  // ∂L/∂h for the state after the current token
    if (g.d_final_state != nullptr) {
      std::copy(g.d_final_state + s * size, g.d_final_state + (s + 1) * size, dh.begin());
    }
    std::vector<T> hs(static_cast<std::size_t>((interval + 1) * size));  // states before and after each token
    std::vector<T> decays(
        static_cast<std::size_t>(interval * size));  // exp(dt A) of each token, kept from the recompute
    T* da = partial.data() + s * (size + ed);
    T* dd = da + size;
    std::int64_t const n_ck = offsets[static_cast<std::size_t>(s) + 1] - offsets[static_cast<std::size_t>(s)];
    for (std::int64_t k = n_ck - 1; k >= 0; --k) {
      std::int64_t const c0 = t0 + k * interval, c1 = std::min(t1, c0 + interval);
      T const* ck = checkpoints + (offsets[static_cast<std::size_t>(s)] + k) * size;
      std::copy(ck, ck + size, hs.begin());
      for (std::int64_t t = c0; t < c1; ++t) {  // recompute the states inside this interval
        T const* hp = hs.data() + (t - c0) * size;
        T* hn = hs.data() + (t - c0 + 1) * size;
        T const* xt = a.x + t * ed;
        T const* dtt = a.dt + t * ed;
        for (std::int64_t n = 0; n < ns; ++n) {
          T const bn = a.b[t * a.ld_bc + n];
          T const* an = a.a + n * ed;
          T* dec = decays.data() + (t - c0) * size + n * ed;
          for (std::int64_t d = 0; d < ed; ++d) {
            dec[d] = exp_of(dtt[d] * an[d]);
            hn[n * ed + d] = dec[d] * hp[n * ed + d] + dtt[d] * xt[d] * bn;
          }
        }
      }
      for (std::int64_t t = c1 - 1; t >= c0; --t) {
        T const* hp = hs.data() + (t - c0) * size;
        T const* hc = hs.data() + (t - c0 + 1) * size;
        T const* xt = a.x + t * ed;
        T const* dtt = a.dt + t * ed;
        T const* dyt = g.dy + t * ed;
        T* dxt = g.dx + t * ed;
        T* ddtt = g.ddt + t * ed;
        for (std::int64_t d = 0; d < ed; ++d) {
          dd[d] += dyt[d] * xt[d];
          dxt[d] = dyt[d] * a.d[d];
          ddtt[d] = T(0);
        }
        for (std::int64_t n = 0; n < ns; ++n) {
          T const bn = a.b[t * a.ld_bc + n], cn = a.c[t * a.ld_bc + n];
          T const* an = a.a + n * ed;
          T* dhn = dh.data() + n * ed;
          T* dan = da + n * ed;
          T const* dec = decays.data() + (t - c0) * size + n * ed;
          T dcn = 0, dbn = 0;
#pragma omp simd reduction(+ : dcn, dbn)
          for (std::int64_t d = 0; d < ed; ++d) {
            T const gh = dhn[d] + dyt[d] * cn;  // total ∂L/∂h_t
            T const decay = dec[d];
            T const hprev = hp[n * ed + d];
            dcn += dyt[d] * hc[n * ed + d];
            dbn += gh * dtt[d] * xt[d];
            ddtt[d] += gh * (an[d] * decay * hprev + xt[d] * bn);
            dxt[d] += gh * dtt[d] * bn;
            dan[d] += gh * dtt[d] * decay * hprev;
            dhn[d] = gh * decay;  // ∂L/∂h_{t-1} through the recurrence
          }
          g.dc[t * g.ld_dbc + n] = dcn;
          g.db[t * g.ld_dbc + n] = dbn;
        }
      }
    }
    if (g.d_init_state != nullptr) {
      std::copy(dh.begin(), dh.end(), g.d_init_state + s * size);
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
