// CPU throughput of the selective scan policies (forward), of the scan's backward,
// and of a whole Mamba block (forward, forward+backward), in tokens/s and useful GFLOP/s.
//
// Useful flops of a block's forward, per token (D = d_model, E = 2D inner, N, R, K):
//   matmuls 2·D·2E + 2·E·(R+2N) + 2·R·E + 2·E·D,  conv 2·K·E,  scan 6·E·N  (exp counted as one)
// forward+backward counts 3x the forward (the usual convention).
#include <ssmlen/layers/mamba_block.hpp>

#include <benchmark/benchmark.h>

namespace sl = ssmlen;

namespace {
sl::backends::host const be;

double block_forward_flops(double d, double e, double n, double r, double k) {
  return 2 * d * 2 * e + 2 * e * (r + 2 * n) + 2 * r * e + 2 * e * d + 2 * k * e + 6 * e * n;
}

//! Random scan inputs at the benchmark's shapes: Δ in [0.001, 0.1], A in [-16, -1], x, B, C, dy normal.
struct scan_problem {
  sl::sequences seqs;
  std::int64_t t, ed, n;
  std::vector<float> x, dt, a, bc, d, y, dy;

  scan_problem(std::int64_t b, std::int64_t l, std::int64_t ed_, std::int64_t n_)
      : seqs(sl::sequences::uniform(b, l)), t(b * l), ed(ed_), n(n_), x(t * ed), dt(t * ed), a(n * ed), bc(t * 2 * n),
        d(ed, 1.0f), y(t * ed), dy(t * ed) {
    sl::rng g(1);
    for (auto& v : x)
      v = static_cast<float>(g.normal());
    for (auto& v : dt)
      v = static_cast<float>(g.uniform(0.001, 0.1));
    for (auto& v : a)
      v = -static_cast<float>(g.uniform(1, 16));
    for (auto& v : bc)
      v = static_cast<float>(g.normal());
    for (auto& v : dy)
      v = static_cast<float>(g.normal());
  }

  [[nodiscard]] sl::scan::selective_scan_args<float> args() const {
    return {&seqs, ed, n, x.data(), dt.data(), a.data(), bc.data(), bc.data() + n, 2 * n, d.data(), nullptr};
  }
};

template <class Scan>
void bm_scan_forward(benchmark::State& state) {
  scan_problem p(state.range(0), state.range(1), state.range(2), state.range(3));
  std::vector<float> ck(sl::scan::checkpoint_offsets(p.seqs, Scan::checkpoint_interval).back() * p.n * p.ed);
  auto const args = p.args();
  for (auto _ : state) {
    sl::scan::selective_scan_forward(Scan{}, be, args, p.y.data(), ck.data(), static_cast<float*>(nullptr));
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(p.t), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["elems/s"] =
      benchmark::Counter(static_cast<double>(p.t * p.ed * p.n), benchmark::Counter::kIsIterationInvariantRate);
}

//! The backward alone (recompute from checkpoints, then the reverse walk), recurrent's checkpoints.
void bm_scan_backward(benchmark::State& state) {
  scan_problem p(state.range(0), state.range(1), state.range(2), state.range(3));
  constexpr std::int64_t interval = sl::scan::recurrent::checkpoint_interval;
  std::vector<float> ck(sl::scan::checkpoint_offsets(p.seqs, interval).back() * p.n * p.ed);
  auto const args = p.args();
  sl::scan::selective_scan_forward(sl::scan::recurrent{}, be, args, p.y.data(), ck.data(),
                                   static_cast<float*>(nullptr));
  std::vector<float> dx(p.t * p.ed), ddt(p.t * p.ed), dbc(p.t * 2 * p.n), da(p.n * p.ed), dd(p.ed);
  sl::scan::selective_scan_grads<float> g{p.dy.data(),      nullptr, dx.data(), ddt.data(), dbc.data(),
                                          dbc.data() + p.n, 2 * p.n, da.data(), dd.data(),  nullptr};
  for (auto _ : state) {
    sl::scan::selective_scan_backward(interval, be, args, ck.data(), g);
    benchmark::DoNotOptimize(dx.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(p.t), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["elems/s"] =
      benchmark::Counter(static_cast<double>(p.t * p.ed * p.n), benchmark::Counter::kIsIterationInvariantRate);
}

template <class Scan>
void bm_block(benchmark::State& state) {
  std::int64_t const b = state.range(0), l = state.range(1), d = state.range(2), n = state.range(3);
  bool const backward = state.range(4) != 0;
  std::int64_t const e = 2 * d, r = (d + 15) / 16, k = 4, t = b * l;
  sl::layers::mamba_block<float, Scan> blk(d, e, n, k, r);
  sl::rng g(2);
  blk.init_mamba(g, 4);
  auto const seqs = sl::sequences::uniform(b, l);
  std::vector<float> u(t * d), out(t * d), dout(t * d), du(t * d);
  for (auto& v : u)
    v = static_cast<float>(g.normal());
  for (auto& v : dout)
    v = static_cast<float>(g.normal());
  typename sl::layers::mamba_block<float, Scan>::cache cache;
  for (auto _ : state) {
    blk.forward(be, seqs, u.data(), out.data(), cache, nullptr, nullptr);
    if (backward) {
      blk.backward(be, seqs, u.data(), dout.data(), du.data(), false, cache, nullptr, nullptr, nullptr);
    }
    benchmark::DoNotOptimize(out.data());
  }
  double const flops =
      block_forward_flops(double(d), double(e), double(n), double(r), double(k)) * double(t) * (backward ? 3.0 : 1.0);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(t), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void scan_shapes(benchmark::internal::Benchmark* bm) {
  bm->ArgNames({"B", "L", "ED", "N"})
      ->Args({64, 256, 128, 16})
      ->Args({1, 4096, 128, 16})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}
void block_shapes(benchmark::internal::Benchmark* bm) {
  bm->ArgNames({"B", "L", "D", "N", "bwd"})
      ->Args({64, 256, 64, 16, 0})
      ->Args({64, 256, 64, 16, 1})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}
}  // namespace

BENCHMARK_TEMPLATE(bm_scan_forward, sl::scan::recurrent)->Apply(scan_shapes);
BENCHMARK_TEMPLATE(bm_scan_forward, sl::scan::chunked<64>)->Apply(scan_shapes);
BENCHMARK_TEMPLATE(bm_scan_forward, sl::scan::chunked<256>)->Apply(scan_shapes);
BENCHMARK(bm_scan_backward)->Apply(scan_shapes);
BENCHMARK_TEMPLATE(bm_block, sl::scan::recurrent)->Apply(block_shapes);
BENCHMARK_TEMPLATE(bm_block, sl::scan::chunked<64>)->Apply(block_shapes);
