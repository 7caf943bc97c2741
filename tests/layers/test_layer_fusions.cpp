// Paths that fuse work into a layer's sweep: conv1d's SiLU output and SiLU backward, and the weight gradient of a
// linear layer over many tokens (the GEMM then sums fixed K chunks). Each against the unfused computation.
#include <ssmlen/core/math.hpp>
#include <ssmlen/layers/conv1d.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/ops/gemm_tiling.hpp>

#include <doctest/doctest.h>

#include <cstring>

#include "../support/gradcheck.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace ssmlen;
using testing::check_gradients;
using testing::fill_normal;
using testing::weighted_sum;

namespace {
backends::host const be;

template <class T>
bool same_bits(std::vector<T> const& u, std::vector<T> const& v) {
  return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * sizeof(T)) == 0;
}
}  // namespace

TEST_CASE("conv1d: the fused SiLU output and SiLU backward equal the separate sweeps bit for bit") {
  rng g(7);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{9, 1, 30, 2});
  std::int64_t const c = 19, k = 4, rows = seqs.tokens(), ldx = 2 * c, st = seqs.count() * (k - 1) * c;
  layers::conv1d<float> conv(c, k);
  conv.init_default(g);
  std::vector<float> x(rows * ldx), init(st), dfin(st), dact(rows * c);
  fill_normal(x, g);
  fill_normal(init, g);
  fill_normal(dfin, g);
  fill_normal(dact, g);

  std::vector<float> y(rows * c), act(rows * c), y2(rows * c), fin(st), fin2(st);
  conv.forward(be, seqs, x.data(), ldx, y.data(), init.data(), fin.data(), act.data());
  conv.forward(be, seqs, x.data(), ldx, y2.data(), init.data(), fin2.data());
  std::vector<float> separate(rows * c);
  for (std::int64_t i = 0; i < rows * c; ++i) {
    separate[i] = silu(y2[i]);
  }
  CHECK(same_bits(y, y2));
  CHECK(same_bits(act, separate));
  CHECK(same_bits(fin, fin2));

  auto backward = [&](bool fused) {
    conv.weight.zero_grad();
    conv.bias.zero_grad();
    std::vector<float> dx(rows * ldx, -3.0f), dinit(st);
    if (fused) {
      conv.backward(be, seqs, x.data(), ldx, dact.data(), dx.data(), ldx, init.data(), dfin.data(), dinit.data(),
                    y.data());
    } else {
      std::vector<float> dy(rows * c);
      for (std::int64_t i = 0; i < rows * c; ++i) {
        dy[i] = dact[i] * silu_grad(y[i]);
      }
      conv.backward(be, seqs, x.data(), ldx, dy.data(), dx.data(), ldx, init.data(), dfin.data(), dinit.data());
    }
    std::vector<float> all = dx;
    all.insert(all.end(), dinit.begin(), dinit.end());
    all.insert(all.end(), conv.weight.grad.begin(), conv.weight.grad.end());
    all.insert(all.end(), conv.bias.grad.begin(), conv.bias.grad.end());
    return all;
  };
  auto const fused = backward(true), separate_grads = backward(false);
  CHECK(same_bits(fused, separate_grads));
  for (std::int64_t r = 0; r < rows; ++r) {  // dx is written in its C columns only
    CHECK(fused[static_cast<std::size_t>(r * ldx + c)] == -3.0f);
  }
}

TEST_CASE("conv1d: gradients through the fused SiLU") {
  rng g(8);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{5, 1, 7});
  std::int64_t const c = 3, k = 3, rows = seqs.tokens(), st = seqs.count() * (k - 1) * c;
  layers::conv1d<double> conv(c, k);
  conv.init_default(g);
  std::vector<double> x(rows * c), w(rows * c), y(rows * c), act(rows * c), dx(rows * c);
  std::vector<double> init(st), fin(st), wf(st), dinit(st);
  fill_normal(x, g);
  fill_normal(w, g);
  fill_normal(init, g);
  fill_normal(wf, g);
  auto loss = [&] {
    conv.forward(be, seqs, x.data(), c, y.data(), init.data(), fin.data(), act.data());
    return weighted_sum(act.data(), w) + weighted_sum(fin.data(), wf);
  };
  loss();
  conv.weight.zero_grad();
  conv.bias.zero_grad();
  conv.backward(be, seqs, x.data(), c, w.data(), dx.data(), c, init.data(), wf.data(), dinit.data(), y.data());
  check_gradients(loss, {{"weight", conv.weight.value.data(), conv.weight.grad.data(), c * k},
                         {"bias", conv.bias.value.data(), conv.bias.grad.data(), c},
                         {"x", x.data(), dx.data(), rows * c},
                         {"init_state", init.data(), dinit.data(), st}});
}

TEST_CASE("linear: the weight gradient over many tokens (K chunks) matches direct sums") {
  std::int64_t const in = 24, out = 40, rows = 9000;  // 9000 tokens: several K chunks
  REQUIRE(ops::gemm_k_chunks(out, in, rows) > 1);
  rng g(9);
  layers::linear<double> lin(in, out, true);
  std::vector<double> x(rows * in), dy(rows * out);
  fill_normal(x, g);
  fill_normal(dy, g);
  for (auto& v : lin.weight.grad) {
    v = 0.5;  // accumulated into
  }
  lin.bias.zero_grad();
  lin.backward(be, x.data(), in, dy.data(), out, nullptr, in, rows);
  double worst = 0;
  for (std::int64_t o = 0; o < out; ++o) {
    for (std::int64_t i = 0; i < in; ++i) {
      double want = 0, mag = 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        want += dy[r * out + o] * x[r * in + i];
        mag += std::abs(dy[r * out + o] * x[r * in + i]);
      }
      worst = std::max(worst, std::abs(lin.weight.grad[o * in + i] - 0.5 - want) / mag);
    }
  }
  CHECK(worst < 1e-13);
}

#if defined(_OPENMP)
TEST_CASE("linear: the K-chunked weight gradient is bit-identical on 1 and 2 threads") {
  std::int64_t const in = 64, out = 128, rows = 12000;
  REQUIRE(ops::gemm_k_chunks(out, in, rows) > 1);
  rng g(10);
  layers::linear<float> lin(in, out, false);
  std::vector<float> x(rows * in), dy(rows * out);
  fill_normal(x, g);
  fill_normal(dy, g);
  auto run = [&](int threads) {
    int const saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    lin.weight.zero_grad();
    lin.backward(be, x.data(), in, dy.data(), out, nullptr, in, rows);
    omp_set_num_threads(saved);
    return std::vector<float>(lin.weight.grad.begin(), lin.weight.grad.end());
  };
  CHECK(same_bits(run(1), run(2)));
}
#endif
