// The host scan's backward (channel tiles, state blocks, lane sums) against a plain per-element oracle that keeps
// every state: widths that fill no tile, one tile, or leave a partial one; state counts that fill no state block
// or leave a partial one; sequences shorter and longer than the checkpoint interval; initial and final states;
// the fused ddt scale. Float results are bit-identical on 1 and 2 threads.
#include <ssmlen/scan/selective_scan.hpp>

#include <doctest/doctest.h>

#include <cstring>

#include "../support/close.hpp"
#include "../support/gradcheck.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace ssmlen;
using testing::require_close;

namespace {

template <class T>
struct problem {
  sequences seqs;
  std::int64_t ed, n;
  std::vector<T> x, dt, a, bc, d, init, dy, dfin, scale;

  problem(std::vector<std::int64_t> const& lengths, std::int64_t ed_, std::int64_t n_, std::uint64_t seed)
      : seqs(sequences::from_lengths(lengths)), ed(ed_), n(n_) {
    rng g(seed);
    auto const rows = seqs.tokens();
    auto fill = [&](std::vector<T>& v, std::int64_t size, double lo, double hi) {
      v.resize(static_cast<std::size_t>(size));
      for (auto& e : v) {
        e = static_cast<T>(g.uniform(lo, hi));
      }
    };
    fill(x, rows * ed, -2, 2);
    fill(dt, rows * ed, 0.01, 0.3);
    fill(a, n * ed, -4, -0.5);
    fill(bc, rows * 2 * n, -2, 2);
    fill(d, ed, -1, 1);
    fill(init, seqs.count() * n * ed, -1, 1);
    fill(dy, rows * ed, -1, 1);
    fill(dfin, seqs.count() * n * ed, -1, 1);
    fill(scale, rows * ed, 0.1, 1);
  }

  [[nodiscard]] scan::selective_scan_args<T> args(bool with_init) const {
    return {&seqs,
            ed,
            n,
            x.data(),
            dt.data(),
            a.data(),
            bc.data(),
            bc.data() + n,
            2 * n,
            d.data(),
            with_init ? init.data() : nullptr};
  }
};

template <class T>
struct grads {
  std::vector<T> dx, ddt, dbc, da, dd, dinit;
};

//! The backward of the scan by definition: every state kept, one element at a time.
grads<double> oracle(problem<double> const& p, bool with_init, bool with_final, bool with_scale) {
  std::int64_t const ed = p.ed, ns = p.n, size = ed * ns;
  grads<double> r;
  r.dx.assign(p.x.size(), 0);
  r.ddt.assign(p.x.size(), 0);
  r.dbc.assign(p.bc.size(), 0);
  r.da.assign(static_cast<std::size_t>(size), 0);
  r.dd.assign(static_cast<std::size_t>(ed), 0);
  r.dinit.assign(p.init.size(), 0);
  for (std::int64_t s = 0; s < p.seqs.count(); ++s) {
    std::int64_t const t0 = p.seqs.begin(s), len = p.seqs.length(s);
    std::vector<double> h(static_cast<std::size_t>((len + 1) * size), 0);  // h[i]: the state before token t0 + i
    if (with_init) {
      std::copy_n(p.init.begin() + s * size, size, h.begin());
    }
    auto at = [&](std::int64_t i, std::int64_t n, std::int64_t c) { return (i * ns + n) * ed + c; };
    for (std::int64_t i = 0; i < len; ++i) {
      std::int64_t const t = t0 + i;
      for (std::int64_t n = 0; n < ns; ++n) {
        for (std::int64_t c = 0; c < ed; ++c) {
          double const decay = std::exp(p.dt[t * ed + c] * p.a[n * ed + c]);
          h[at(i + 1, n, c)] = decay * h[at(i, n, c)] + p.dt[t * ed + c] * p.x[t * ed + c] * p.bc[t * 2 * ns + n];
        }
      }
    }
    std::vector<double> dh(static_cast<std::size_t>(size), 0);
    if (with_final) {
      std::copy_n(p.dfin.begin() + s * size, size, dh.begin());
    }
    for (std::int64_t i = len - 1; i >= 0; --i) {
      std::int64_t const t = t0 + i;
      for (std::int64_t c = 0; c < ed; ++c) {
        double const dyv = p.dy[t * ed + c], x = p.x[t * ed + c], dt = p.dt[t * ed + c];
        double dx = dyv * p.d[c], ddt = 0;
        r.dd[c] += dyv * x;
        for (std::int64_t n = 0; n < ns; ++n) {
          double const b = p.bc[t * 2 * ns + n], cc = p.bc[t * 2 * ns + ns + n], an = p.a[n * ed + c];
          double const decay = std::exp(dt * an), hprev = h[at(i, n, c)];
          double const gh = dh[n * ed + c] + dyv * cc;
          r.dbc[t * 2 * ns + ns + n] += dyv * h[at(i + 1, n, c)];
          r.dbc[t * 2 * ns + n] += gh * dt * x;
          ddt += gh * (an * decay * hprev + x * b);
          dx += gh * dt * b;
          r.da[n * ed + c] += gh * dt * decay * hprev;
          dh[n * ed + c] = gh * decay;
        }
        r.dx[t * ed + c] = dx;
        r.ddt[t * ed + c] = with_scale ? ddt * p.scale[t * ed + c] : ddt;
      }
    }
    std::copy(dh.begin(), dh.end(), r.dinit.begin() + s * size);
  }
  return r;
}

template <class T>
grads<T> run(problem<T> const& p, bool with_init, bool with_final, bool with_scale) {
  backends::host const be;
  constexpr std::int64_t interval = scan::recurrent::checkpoint_interval;
  auto const args = p.args(with_init);
  std::vector<T> y(p.x.size()),
      ck(static_cast<std::size_t>(scan::checkpoint_offsets(p.seqs, interval).back() * p.n * p.ed));
  scan::selective_scan_forward(scan::recurrent{}, be, args, y.data(), ck.data(), static_cast<T*>(nullptr));
  grads<T> r;
  r.dx.assign(p.x.size(), T(-7));  // written: the initial values must not leak through
  r.ddt.assign(p.x.size(), T(-7));
  r.dbc.assign(p.bc.size(), T(-7));
  r.da.assign(static_cast<std::size_t>(p.n * p.ed), 0);
  r.dd.assign(static_cast<std::size_t>(p.ed), 0);
  r.dinit.assign(p.init.size(), T(-7));
  scan::selective_scan_grads<T> g{p.dy.data(),  with_final ? p.dfin.data() : nullptr,
                                  r.dx.data(),  r.ddt.data(),
                                  r.dbc.data(), r.dbc.data() + p.n,
                                  2 * p.n,      r.da.data(),
                                  r.dd.data(),  r.dinit.data()};
  scan::selective_scan_backward(interval, be, args, ck.data(), g, with_scale ? p.scale.data() : nullptr);
  return r;
}

}  // namespace

TEST_CASE("selective_scan_backward: tiled and blocked equals the per-element oracle") {
  std::vector<std::int64_t> const lengths{1, 63, 64, 65, 130, 7};  // around and across the interval of 64
  for (std::int64_t const ed : {1, 5, 8, 13, 37}) {                // no whole tile, one, and partial tiles
    for (std::int64_t const n : {1, 4, 6}) {                       // one block partly filled, one, one and a part
      problem<double> const p(lengths, ed, n, 100 + static_cast<std::uint64_t>(ed * 10 + n));
      for (int variant = 0; variant < 3; ++variant) {
        bool const with_init = variant >= 1, with_final = variant >= 1, with_scale = variant == 2;
        CAPTURE(ed);
        CAPTURE(n);
        CAPTURE(variant);
        auto const want = oracle(p, with_init, with_final, with_scale);
        auto const got = run(p, with_init, with_final, with_scale);
        require_close(got.dx, want.dx, "dx");
        require_close(got.ddt, want.ddt, "ddt");
        require_close(got.dbc, want.dbc, "dB, dC");
        require_close(got.da, want.da, "dA");
        require_close(got.dd, want.dd, "dD");
        if (with_init) {
          require_close(got.dinit, want.dinit, "d initial state");
        }
      }
    }
  }
}

#if defined(_OPENMP)
TEST_CASE("selective_scan_backward: float results are bit-identical on 1 and 2 threads") {
  problem<float> const p({100, 37, 256, 64, 5, 130}, 40, 16, 7);
  int const saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto const one = run(p, true, true, true);
  omp_set_num_threads(2);
  auto const two = run(p, true, true, true);
  omp_set_num_threads(saved);
  auto same = [](std::vector<float> const& u, std::vector<float> const& v) {
    return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * sizeof(float)) == 0;
  };
  CHECK(same(one.dx, two.dx));
  CHECK(same(one.ddt, two.ddt));
  CHECK(same(one.dbc, two.dbc));
  CHECK(same(one.da, two.da));
  CHECK(same(one.dd, two.dd));
  CHECK(same(one.dinit, two.dinit));
}
#endif

TEST_CASE("selective scan: Δ by the fused softplus, forward as the plain scan on Δ, ddt and the bias's gradient by "
          "finite differences") {
  problem<double> p({5, 70, 1, 66}, 6, 3, 11);
  rng g(12);
  std::vector<double> pre(p.dt.size()), bias(static_cast<std::size_t>(p.ed));
  for (auto& v : pre) {
    v = g.uniform(-4, 1);
  }
  testing::fill_normal(bias, g, 0.5);
  double const delta_min = 0.01;
  auto fused = p.args(true);
  fused.dt = pre.data();
  fused.dt_softplus = true;
  fused.dt_bias = bias.data();
  fused.delta_min = delta_min;
  std::vector<double> delta(pre.size());
  for (std::size_t i = 0; i < pre.size(); ++i) {
    delta[i] = delta_min + softplus(pre[i] + bias[i % static_cast<std::size_t>(p.ed)]);
  }
  auto plain = p.args(true);
  plain.dt = delta.data();

  backends::host const be;
  constexpr std::int64_t interval = scan::recurrent::checkpoint_interval;
  auto const ck_rows = scan::checkpoint_offsets(p.seqs, interval).back();
  std::vector<double> ck(static_cast<std::size_t>(ck_rows * p.n * p.ed));
  std::vector<double> fin(p.init.size());
  auto forward = [&](scan::selective_scan_args<double> const& a, auto policy) {
    std::vector<double> y(p.x.size());
    bool const own_interval = decltype(policy)::checkpoint_interval == interval;  // else ck's rows do not fit
    scan::selective_scan_forward(policy, be, a, y.data(), own_interval ? ck.data() : nullptr, fin.data());
    return y;
  };
  require_close(forward(fused, scan::recurrent{}), forward(plain, scan::recurrent{}), "y, recurrent");
  require_close(forward(fused, scan::chunked<16>{}), forward(plain, scan::chunked<16>{}), "y, chunked");

  auto loss = [&] {  // L = Σ dy·y + Σ dfin·final
    auto const y = forward(fused, scan::recurrent{});
    double l = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      l += p.dy[i] * y[i];
    }
    for (std::size_t i = 0; i < fin.size(); ++i) {
      l += p.dfin[i] * fin[i];
    }
    return l;
  };
  forward(fused, scan::recurrent{});
  std::vector<double> dx(p.x.size()), ddt(p.x.size()), dbc(p.bc.size()), da(static_cast<std::size_t>(p.n * p.ed)),
      dd(static_cast<std::size_t>(p.ed)), dinit(p.init.size()), dbias(bias.size());
  scan::selective_scan_grads<double> const grads{p.dy.data(), p.dfin.data(),    dx.data(),   ddt.data(),
                                                 dbc.data(),  dbc.data() + p.n, 2 * p.n,     da.data(),
                                                 dd.data(),   dinit.data(),     dbias.data()};
  scan::selective_scan_backward(interval, be, fused, ck.data(), grads);
  testing::check_gradients(loss,
                           {{"dt (before the softplus)", pre.data(), ddt.data(), static_cast<std::int64_t>(pre.size())},
                            {"dt's bias", bias.data(), dbias.data(), p.ed}},
                           1e-6, 60);
  auto unfused_min = plain;
  unfused_min.delta_min = delta_min;  // delta_min applies only with dt_softplus
  CHECK_THROWS_AS(forward(unfused_min, scan::recurrent{}), error);
}
