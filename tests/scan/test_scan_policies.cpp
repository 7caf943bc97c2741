// chunked<C> against recurrent: outputs, final states and gradients, for chunk
// lengths that do and do not divide the sequence lengths, with and without initial states.
#include <ssmlen/scan/selective_scan.hpp>

#include <doctest/doctest.h>

#include "../support/close.hpp"
#include "../support/gradcheck.hpp"

using namespace ssmlen;
using testing::require_close;

namespace {

struct problem {
  sequences seqs;
  std::int64_t ed = 5, n = 4;
  std::vector<double> x, dt, a, bc, d, init, dy, dfin;

  problem(std::vector<std::int64_t> lengths, std::uint64_t seed) : seqs(sequences::from_lengths(lengths)) {
    rng g(seed);
    auto const rows = seqs.tokens();
    x.resize(rows * ed);
    dt.resize(rows * ed);
    a.resize(n * ed);
    bc.resize(rows * 2 * n);
    d.resize(ed);
    init.resize(seqs.count() * n * ed);
    dy.resize(rows * ed);
    dfin.resize(init.size());
    testing::fill_normal(x, g);
    for (auto& v : dt) {
      v = g.uniform(0.01, 0.3);
    }
    for (auto& v : a) {
      v = -g.uniform(0.5, 4.0);
    }
    testing::fill_normal(bc, g);
    testing::fill_normal(d, g);
    testing::fill_normal(init, g);
    testing::fill_normal(dy, g);
    testing::fill_normal(dfin, g);
  }

  scan::selective_scan_args<double> args(bool with_init) const {
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

struct result {
  std::vector<double> y, fin, dx, ddt, dbc, da, dd, dinit;
};

template <class Policy>
result run(problem const& p, bool with_init) {
  backends::host const be;
  auto const rows = p.seqs.tokens();
  result r;
  r.y.assign(rows * p.ed, 0);
  r.fin.assign(p.init.size(), 0);
  std::vector<double> ck(scan::checkpoint_offsets(p.seqs, Policy::checkpoint_interval).back() * p.n * p.ed);
  auto const args = p.args(with_init);
  scan::selective_scan_forward(Policy{}, be, args, r.y.data(), ck.data(), r.fin.data());
  r.dx.assign(rows * p.ed, 0);
  r.ddt.assign(rows * p.ed, 0);
  r.dbc.assign(rows * 2 * p.n, 0);
  r.da.assign(p.n * p.ed, 0);
  r.dd.assign(p.ed, 0);
  r.dinit.assign(p.init.size(), 0);
  scan::selective_scan_grads<double> g{p.dy.data(),        p.dfin.data(), r.dx.data(), r.ddt.data(), r.dbc.data(),
                                       r.dbc.data() + p.n, 2 * p.n,       r.da.data(), r.dd.data(),  r.dinit.data()};
  scan::selective_scan_backward(Policy::checkpoint_interval, be, args, ck.data(), g);
  return r;
}

template <class Policy>
void compare_with_recurrent(std::vector<std::int64_t> lengths, bool with_init) {
  problem const p(std::move(lengths), 11);
  auto const ref = run<scan::recurrent>(p, with_init);
  auto const got = run<Policy>(p, with_init);
  require_close(got.y, ref.y, "y");
  require_close(got.fin, ref.fin, "final state");
  require_close(got.dx, ref.dx, "dx");
  require_close(got.ddt, ref.ddt, "ddt");
  require_close(got.dbc, ref.dbc, "dB, dC");
  require_close(got.da, ref.da, "dA");
  require_close(got.dd, ref.dd, "dD");
  if (with_init) {
    require_close(got.dinit, ref.dinit, "d initial state");
  }
}

}  // namespace

TEST_CASE_TEMPLATE("chunked<C> equals recurrent", Policy, scan::chunked<1>, scan::chunked<3>, scan::chunked<8>,
                   scan::chunked<64>) {
  for (bool const with_init : {false, true}) {
    CAPTURE(with_init);
    compare_with_recurrent<Policy>({24, 7, 1, 65, 130, 16}, with_init);  // multiples of C and not, longer than 64
  }
}
