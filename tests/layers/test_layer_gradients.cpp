// Every layer's backward against central finite differences in double precision,
// on odd shapes, through initial states and final states where the layer has them.
#include <ssmlen/layers/conv1d.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/mamba_block.hpp>
#include <ssmlen/layers/rmsnorm.hpp>
#include <ssmlen/layers/selective_ssm.hpp>

#include <doctest/doctest.h>

#include "../support/gradcheck.hpp"

using namespace ssmlen;
using testing::check_gradients;
using testing::fill_normal;
using testing::weighted_sum;

namespace {
backends::host const be;

sequences ragged(std::vector<std::int64_t> lengths) { return sequences::from_lengths(lengths); }
}  // namespace

TEST_CASE("linear: gradients of weight, bias and input") {
  rng g(1);
  layers::linear<double> lin(5, 3, true);
  lin.init_default(g);
  std::int64_t const rows = 7;
  std::vector<double> x(rows * 5), w(rows * 3), y(rows * 3), dx(rows * 5);
  fill_normal(x, g);
  fill_normal(w, g);
  auto loss = [&] {
    lin.forward(be, x.data(), 5, y.data(), 3, rows);
    return weighted_sum(y.data(), w);
  };
  lin.weight.zero_grad();
  lin.bias.zero_grad();
  lin.backward(be, x.data(), 5, w.data(), 3, dx.data(), 5, rows);
  check_gradients(loss, {{"weight", lin.weight.value.data(), lin.weight.grad.data(), lin.weight.value.size()},
                         {"bias", lin.bias.value.data(), lin.bias.grad.data(), 3},
                         {"x", x.data(), dx.data(), rows * 5}});
}

TEST_CASE("rmsnorm: gradients of weight and input") {
  rng g(2);
  layers::rmsnorm<double> norm(9);
  fill_normal(norm.weight.value, g);
  std::int64_t const rows = 6;
  std::vector<double> x(rows * 9), w(rows * 9), y(rows * 9), rstd(rows), dx(rows * 9);
  fill_normal(x, g);
  fill_normal(w, g);
  auto loss = [&] {
    norm.forward(be, x.data(), y.data(), rstd.data(), rows);
    return weighted_sum(y.data(), w);
  };
  loss();
  norm.weight.zero_grad();
  norm.backward(be, x.data(), rstd.data(), w.data(), dx.data(), rows, false);
  check_gradients(
      loss, {{"weight", norm.weight.value.data(), norm.weight.grad.data(), 9}, {"x", x.data(), dx.data(), rows * 9}});
}

TEST_CASE("conv1d: gradients of weight, bias, input, initial state, through the final state") {
  rng g(3);
  auto const seqs = ragged({5, 1, 7, 2});
  std::int64_t const c = 3, k = 4, rows = seqs.tokens(), st = seqs.count() * (k - 1) * c;
  layers::conv1d<double> conv(c, k);
  conv.init_default(g);
  std::vector<double> x(rows * c), w(rows * c), y(rows * c), dx(rows * c);
  std::vector<double> init(st), fin(st), wf(st), dinit(st);
  fill_normal(x, g);
  fill_normal(w, g);
  fill_normal(init, g);
  fill_normal(wf, g);
  auto loss = [&] {
    conv.forward(be, seqs, x.data(), c, y.data(), init.data(), fin.data());
    return weighted_sum(y.data(), w) + weighted_sum(fin.data(), wf);
  };
  conv.weight.zero_grad();
  conv.bias.zero_grad();
  conv.backward(be, seqs, x.data(), c, w.data(), dx.data(), c, init.data(), wf.data(), dinit.data());
  check_gradients(loss, {{"weight", conv.weight.value.data(), conv.weight.grad.data(), c * k},
                         {"bias", conv.bias.value.data(), conv.bias.grad.data(), c},
                         {"x", x.data(), dx.data(), rows * c},
                         {"init_state", init.data(), dinit.data(), st}});
}

TEST_CASE_TEMPLATE("selective_ssm: gradients of every parameter, input, initial state, through the final state", Scan,
                   scan::recurrent, scan::chunked<3>) {
  for (double const delta_min : {0.0, 0.05}) {  // Mamba's Δ, and Δ with a floor
    CAPTURE(delta_min);
    rng g(4);
    auto const seqs = ragged({7, 2, 9});
    std::int64_t const ed = 6, n = 3, r = 2, rows = seqs.tokens(), st = seqs.count() * n * ed;
    layers::selective_ssm<double, Scan> ssm(ed, n, r);
    ssm.delta_min = delta_min;
    ssm.init_mamba(g);
    fill_normal(ssm.a_log.value, g, 0.5);
    fill_normal(ssm.d.value, g);
    std::vector<double> x(rows * ed), w(rows * ed), y(rows * ed), dx(rows * ed);
    std::vector<double> init(st), fin(st), wf(st), dinit(st);
    fill_normal(x, g);
    fill_normal(w, g);
    fill_normal(init, g);
    fill_normal(wf, g);
    typename layers::selective_ssm<double, Scan>::cache k;
    auto loss = [&] {
      ssm.forward(be, seqs, x.data(), y.data(), k, init.data(), fin.data());
      return weighted_sum(y.data(), w) + weighted_sum(fin.data(), wf);
    };
    loss();
    for (auto* p : {&ssm.x_proj.weight, &ssm.dt_proj.weight, &ssm.dt_proj.bias, &ssm.a_log, &ssm.d}) {
      p->zero_grad();
    }
    ssm.backward(be, seqs, x.data(), w.data(), dx.data(), k, init.data(), wf.data(), dinit.data());
    check_gradients(loss,
                    {{"x_proj.weight", ssm.x_proj.weight.value.data(), ssm.x_proj.weight.grad.data(),
                      ssm.x_proj.weight.value.size()},
                     {"dt_proj.weight", ssm.dt_proj.weight.value.data(), ssm.dt_proj.weight.grad.data(), ed * r},
                     {"dt_proj.bias", ssm.dt_proj.bias.value.data(), ssm.dt_proj.bias.grad.data(), ed},
                     {"A_log", ssm.a_log.value.data(), ssm.a_log.grad.data(), ed * n},
                     {"D", ssm.d.value.data(), ssm.d.grad.data(), ed},
                     {"x", x.data(), dx.data(), rows * ed},
                     {"init_state", init.data(), dinit.data(), st}},
                    1e-5);  // a floored Δ makes dt_proj's gradient small: h = 1e-6 would leave roundoff at 1e-6
  }
}

TEST_CASE_TEMPLATE("mamba_block: gradients of every parameter, input and both states", Scan, scan::recurrent,
                   scan::chunked<4>) {
  rng g(5);
  auto const seqs = ragged({6, 11, 3});
  std::int64_t const d = 5, ed = 7, n = 3, k = 4, r = 2, rows = seqs.tokens();
  layers::mamba_block<double, Scan> blk(d, ed, n, k, r);
  blk.init_mamba(g, 2);
  std::vector<double> u(rows * d), w(rows * d), out(rows * d), du(rows * d);
  fill_normal(u, g);
  fill_normal(w, g);
  auto init = blk.make_state(seqs.count()), fin = blk.make_state(seqs.count());
  auto wf = blk.make_state(seqs.count()), dinit = blk.make_state(seqs.count());
  fill_normal(init.conv, g);
  fill_normal(init.ssm, g);
  fill_normal(wf.conv, g);
  fill_normal(wf.ssm, g);
  typename layers::mamba_block<double, Scan>::cache cache;
  auto loss = [&] {
    blk.forward(be, seqs, u.data(), out.data(), cache, &init, &fin);
    return weighted_sum(out.data(), w) + weighted_sum(fin.conv.data(), {wf.conv.begin(), wf.conv.end()}) +
           weighted_sum(fin.ssm.data(), {wf.ssm.begin(), wf.ssm.end()});
  };
  loss();
  std::vector<layers::param<double>*> params{
      &blk.in_proj.weight,   &blk.conv.weight, &blk.conv.bias, &blk.ssm.x_proj.weight, &blk.ssm.dt_proj.weight,
      &blk.ssm.dt_proj.bias, &blk.ssm.a_log,   &blk.ssm.d,     &blk.out_proj.weight};
  for (auto* p : params) {
    p->zero_grad();
  }
  blk.backward(be, seqs, u.data(), w.data(), du.data(), false, cache, &init, &wf, &dinit);
  std::vector<testing::grad_target> targets;
  for (auto* p : params) {
    targets.push_back({"param", p->value.data(), p->grad.data(), p->value.size()});
  }
  targets.push_back({"u", u.data(), du.data(), rows * d});
  targets.push_back({"init.conv", init.conv.data(), dinit.conv.data(), init.conv.size()});
  targets.push_back({"init.ssm", init.ssm.data(), dinit.ssm.data(), init.ssm.size()});
  check_gradients(loss, targets);
}
