// SPDX-License-Identifier: Apache-2.0
//! @file logic_graph.hpp
//! Evaluating a random boolean circuit with a search tool (the paper's
//! logical-graph task). The prompt is a Python-like program in random line
//! order: three inputs (`v191 = True`), gates (`v630 := v191 and not v872`)
//! and `return v630`. The expert evaluates the returned gate by depth-first
//! search: it looks gates and values up with `[FIND] .. [END]`, descends into
//! an operand that has no value yet (writing a link line `child < parent` to
//! come back by), and writes `gate = value` lines as gates resolve. Each token
//! depends on the last few lines only, so a model that learned on 10-node
//! graphs can evaluate 1000-node ones. The trace format is in docs/tasks.md.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/search_memory.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::tasks {

//! A gate's operator; the second operand may be negated.
enum class logic_op : std::uint8_t { and_, or_, and_not, or_not };

//! A random circuit. Nodes 0..2 are inputs; node k >= 3 is a gate over two earlier nodes; the last is returned.
struct logic_graph_instance {
  struct gate {
    int x = 0;
    int y = 0;
    logic_op op = logic_op::and_;
    friend bool operator==(gate const&, gate const&) = default;
  };
  std::vector<int> labels;      // node -> label 0..999 (written v000..v999), distinct
  std::array<bool, 3> inputs;   // values of nodes 0..2
  std::vector<gate> gates;      // gates[k] defines node k + 3
  std::vector<int> line_order;  // prompt line i defines node line_order[i]
  friend bool operator==(logic_graph_instance const&, logic_graph_instance const&) = default;

  [[nodiscard]] int nodes() const { return static_cast<int>(labels.size()); }
};

//! Every node's value, by plain forward evaluation (the reference for check()).
inline std::vector<bool> logic_graph_values(logic_graph_instance const& g) {
  std::vector<bool> v(g.labels.size());
  for (std::size_t i = 0; i < 3 && i < v.size(); ++i) {
    v[i] = g.inputs[i];
  }
  for (std::size_t k = 0; k < g.gates.size(); ++k) {
    auto const& gt = g.gates[k];
    bool const a = v[static_cast<std::size_t>(gt.x)];
    bool const b = v[static_cast<std::size_t>(gt.y)];
    switch (gt.op) {
    case logic_op::and_:
      v[k + 3] = a && b;
      break;
    case logic_op::or_:
      v[k + 3] = a || b;
      break;
    case logic_op::and_not:
      v[k + 3] = a && !b;
      break;
    case logic_op::or_not:
      v[k + 3] = a || !b;
      break;
    }
  }
  return v;
}

//! The logical-graph task with a search-memory tool, as specified in docs/tasks.md.
class logic_graph {
public:
  using instance = logic_graph_instance;
  using tool_type = tools::search_memory;
  static constexpr int min_nodes = 5;     // 3 inputs and at least 2 gates, so that every input can be used
  static constexpr int max_nodes = 1000;  // labels v000..v999 are distinct

  explicit logic_graph(tools::search_memory_limits limits = {}) : vocab_(make_vocab()), limits_(limits) {
    auto const id = [&](char const* name) { return vocab_.id(name); };
    v_ = id("v");
    digit0_ = id("0");
    assign_ = id(":=");
    equals_ = id("=");
    ops_ = {id("and"), id("or"), id("and not"), id("or not")};
    true_ = id("True");
    false_ = id("False");
    return_ = id("return");
    newline_ = id("<NL>");
    find_ = id("[FIND]");
    end_ = id("[END]");
    colon_ = id(":");
    link_ = id("<");
    ans_ = id("[ANS]");
    eos_ = id("<EOS>");
  }

  //! <PAD>, v 0..9 (ids 2..11), := = and or "and not" "or not" True False return <NL>, then [FIND] [END] : <
  //! [ANS] <EOS>. "and not" and "or not" are one token each, so that every gate line has the same length.
  static tools::vocab make_vocab() {
    return tools::vocab{"v",     "0",      "1",    "2",      "3",     "4",  "5",       "6",      "7",
                        "8",     "9",      ":=",   "=",      "and",   "or", "and not", "or not", "True",
                        "False", "return", "<NL>", "[FIND]", "[END]", ":",  "<",       "[ANS]",  "<EOS>"};
  }

  [[nodiscard]] std::string name() const { return "logic_graph"; }
  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }

  //! Training distribution: n' ~ U{5..n} nodes. Sizes below 5 (the smallest graph that reads all three inputs)
  //! draw 5-node graphs, so that size sweeps shared with other tasks stay valid.
  [[nodiscard]] instance sample(rng& g, int n) const {
    check_arg(n >= 1 && n <= max_nodes, "n", n, "must be in [1, 1000] nodes");
    return sample_exact(g, static_cast<int>(g.uniform_int(min_nodes, std::max(n, min_nodes))));
  }
  //! Test distribution: exactly n nodes (3 inputs, n - 3 gates), every node an ancestor of the returned one; 5
  //! nodes when n < 5.
  [[nodiscard]] instance sample_exact(rng& g, int n) const {
    check_arg(n >= 1 && n <= max_nodes, "n", n, "must be in [1, 1000] nodes");
    n = std::max(n, min_nodes);
    instance x;
    // Distinct labels: a partial shuffle of 0..999.
    std::vector<int> pool(max_nodes);
    for (int i = 0; i < max_nodes; ++i) {
      pool[static_cast<std::size_t>(i)] = i;
    }
    for (int i = 0; i < n; ++i) {
      std::swap(pool[static_cast<std::size_t>(i)], pool[static_cast<std::size_t>(g.uniform_int(i, max_nodes - 1))]);
    }
    x.labels.assign(pool.begin(), pool.begin() + n);
    for (auto& b : x.inputs) {
      b = g.uniform_int(0, 1) == 1;
    }
    // Gates over earlier nodes. `unused` holds the nodes no gate reads yet; the first operand always comes from
    // it, the second too when the remaining gates could not otherwise use every node.
    std::vector<int> unused{0, 1, 2};
    int const gates = n - 3;
    auto take = [&](std::size_t i) {
      int const v = unused[i];
      unused[i] = unused.back();
      unused.pop_back();
      return v;
    };
    for (int k = 0; k < gates; ++k) {
      int const node = k + 3;
      int const xa = take(static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(unused.size()) - 1)));
      int y = 0;
      if (static_cast<int>(unused.size()) > gates - k - 1) {
        y = take(static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(unused.size()) - 1)));
      } else {
        do {
          y = static_cast<int>(g.uniform_int(0, node - 1));
        } while (y == xa);
        auto const it = std::find(unused.begin(), unused.end(), y);
        if (it != unused.end()) {
          take(static_cast<std::size_t>(it - unused.begin()));
        }
      }
      auto const op = static_cast<logic_op>(g.uniform_int(0, 3));
      x.gates.push_back({xa, y, op});
      unused.push_back(node);
    }
    // Lines in random order (a full shuffle), so that finding a definition takes the search.
    x.line_order.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      x.line_order[static_cast<std::size_t>(i)] = i;
    }
    for (int i = n - 1; i > 0; --i) {
      std::swap(x.line_order[static_cast<std::size_t>(i)], x.line_order[static_cast<std::size_t>(g.uniform_int(0, i))]);
    }
    return x;
  }

  [[nodiscard]] nlohmann::json describe(instance const& x) const {
    validate(x);
    return {{"nodes", x.nodes()}, {"returns", label_string(x.labels.back())}, {"value", logic_graph_values(x).back()}};
  }

  //! The program: one line per node in `line_order`, then `return vR`.
  [[nodiscard]] std::vector<tools::token> prompt(instance const& x) const {
    validate(x);
    std::vector<tools::token> p;
    p.reserve(static_cast<std::size_t>(x.nodes()) * 15 + 8);
    for (auto node : x.line_order) {
      put_label(p, x.labels[static_cast<std::size_t>(node)]);
      if (node < 3) {
        p.push_back(equals_);
        p.push_back(x.inputs[static_cast<std::size_t>(node)] ? true_ : false_);
      } else {
        auto const& gt = x.gates[static_cast<std::size_t>(node - 3)];
        p.push_back(assign_);
        put_label(p, x.labels[static_cast<std::size_t>(gt.x)]);
        p.push_back(ops_[static_cast<std::size_t>(gt.op)]);
        put_label(p, x.labels[static_cast<std::size_t>(gt.y)]);
      }
      p.push_back(newline_);
    }
    p.push_back(return_);
    put_label(p, x.labels.back());
    p.push_back(newline_);
    return p;
  }

  //! The output stream is the returned gate's value: `True` or `False`.
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    validate(x);
    return out.size() == 1 && out[0] == (logic_graph_values(x).back() ? true_ : false_);
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }

  //! The expert episode (docs/tasks.md), written by driving a real tool. One visit of gate u:
  //!   [FIND] u := [END] (u := x OP y)  u : OP  [FIND] x = [END] (x = a | nothing)
  //!   nothing: <NL> x < u <NL>, then visit x.   a: a [FIND] y = [END] (y = b | nothing)
  //!   nothing: <NL> y < u <NL>, then visit y.   b: b r <NL> u = r <NL> [FIND] u < [END] (u < p | nothing)
  //!   u < p: visit p.   nothing (u is returned): [ANS] r <EOS>
  [[nodiscard]] tools::trace expert(instance const& x) const {
    validate(x);
    auto const values = logic_graph_values(x);
    std::vector<int> node_of(max_nodes, -1);  // label -> node
    for (int i = 0; i < x.nodes(); ++i) {
      node_of[static_cast<std::size_t>(x.labels[static_cast<std::size_t>(i)])] = i;
    }
    writer w(*this, prompt(x), static_cast<std::size_t>(x.nodes()) * 260 + 64);
    auto const value_token = [&](bool b) { return b ? true_ : false_; };
    auto const label_of = [&](std::span<const tools::token> t) {  // "v d d d" -> node
      int const label = (t[1] - digit0_) * 100 + (t[2] - digit0_) * 10 + (t[3] - digit0_);
      return node_of[static_cast<std::size_t>(label)];
    };
    int u = x.nodes() - 1;
    while (true) {
      int const lu = x.labels[static_cast<std::size_t>(u)];
      auto const def = w.find(lu, assign_);  // u := x OP y
      auto const& gt = x.gates[static_cast<std::size_t>(u - 3)];
      auto const op = ops_[static_cast<std::size_t>(gt.op)];
      ssmlen::check(def.size() == 15 && def[9] == op, "logic_graph: the expert found a malformed definition");
      w.label(lu);
      w.store(colon_);
      w.store(op);
      // Each operand: its value line, or a descent.
      auto const operand = [&](int node) -> bool {
        auto const seen = w.find(x.labels[static_cast<std::size_t>(node)], equals_);
        if (seen.empty()) {
          w.store(newline_);
          w.label(x.labels[static_cast<std::size_t>(node)]);
          w.store(link_);
          w.label(lu);
          w.store(newline_);
          return false;
        }
        w.store(seen[5]);
        return true;
      };
      if (!operand(gt.x)) {
        u = gt.x;
        continue;
      }
      if (!operand(gt.y)) {
        u = gt.y;
        continue;
      }
      auto const r = value_token(values[static_cast<std::size_t>(u)]);
      w.store(r);
      w.store(newline_);
      w.label(lu);
      w.store(equals_);
      w.store(r);
      w.store(newline_);
      auto const parent = w.find(lu, link_);  // u < p
      if (parent.empty()) {
        w.store(ans_);
        w.store(r);
        w.end(eos_);
        return std::move(w.t);
      }
      ssmlen::check(parent.size() == 10, "logic_graph: the expert found a malformed link");
      u = label_of(std::span<const tools::token>(parent).subspan(5, 4));
    }
  }

private:
  //! Drives a fresh tool with the expert's tokens and records the trace with roles.
  struct writer {
    logic_graph const& task;
    tool_type tool;
    tools::trace t;
    std::vector<tools::token> obs;
    bool answering = false;

    writer(logic_graph const& owner, std::vector<tools::token> const& prompt, std::size_t reserve)
        : task(owner), tool(owner.make_tool()) {
      t.reserve(prompt.size() + reserve);
      tool.reset(prompt);
      for (auto p : prompt) {
        t.push(p, tools::role::input);
      }
    }
    void command(tools::token c, tools::tool_reply_kind want) {
      auto const r = tool.feed(c);
      ssmlen::check(r.kind == want, "logic_graph: the expert's search was refused");
      t.push(c, tools::role::command);
      if (r.kind == tools::tool_reply_kind::observe) {
        obs.assign(r.observation.begin(), r.observation.end());
        for (auto o : obs) {
          t.push(o, tools::role::observation);
        }
      }
    }
    //! `[FIND] vL what [END]`; returns the observation.
    std::vector<tools::token> const& find(int label, tools::token what) {
      command(task.find_, tools::tool_reply_kind::pending);
      for (auto c : task.label_tokens(label)) {
        command(c, tools::tool_reply_kind::pending);
      }
      command(what, tools::tool_reply_kind::pending);
      command(task.end_, tools::tool_reply_kind::observe);
      return obs;
    }
    void store(tools::token s) {
      auto const r = tool.feed(s);
      ssmlen::check(r.kind == tools::tool_reply_kind::stored, "logic_graph: the expert's note was refused");
      t.push(s, answering ? tools::role::output : tools::role::thought);
      answering = answering || s == task.ans_;
    }
    void label(int l) {
      for (auto c : task.label_tokens(l)) {
        store(c);
      }
    }
    void end(tools::token eos) { t.push(eos, tools::role::output); }
  };

  static std::string label_string(int l) {
    std::string s = "v000";
    s[1] = static_cast<char>('0' + l / 100);
    s[2] = static_cast<char>('0' + l / 10 % 10);
    s[3] = static_cast<char>('0' + l % 10);
    return s;
  }
  //! `v d d d`: a label as tokens.
  [[nodiscard]] std::array<tools::token, 4> label_tokens(int l) const {
    return {v_, static_cast<tools::token>(digit0_ + l / 100), static_cast<tools::token>(digit0_ + l / 10 % 10),
            static_cast<tools::token>(digit0_ + l % 10)};
  }
  void put_label(std::vector<tools::token>& out, int l) const {
    auto const t = label_tokens(l);
    out.insert(out.end(), t.begin(), t.end());
  }

  static void validate(instance const& x) {
    auto const n = x.nodes();
    check_arg(n >= min_nodes && n <= max_nodes, "logic_graph nodes", n, "must be in [5, 1000]");
    check_arg(static_cast<int>(x.gates.size()) == n - 3, "logic_graph gates", x.gates.size(), "must be nodes - 3");
    check_arg(static_cast<int>(x.line_order.size()) == n, "logic_graph line_order", x.line_order.size(),
              "must list every node once");
    std::vector<char> used(1000, 0), listed(static_cast<std::size_t>(n), 0);
    for (auto l : x.labels) {
      check_arg(l >= 0 && l < 1000 && !used[static_cast<std::size_t>(l)], "logic_graph label", l,
                "must be distinct and in [0, 999]");
      used[static_cast<std::size_t>(l)] = 1;
    }
    for (auto i : x.line_order) {
      check_arg(i >= 0 && i < n && !listed[static_cast<std::size_t>(i)], "logic_graph line_order entry", i,
                "must list every node once");
      listed[static_cast<std::size_t>(i)] = 1;
    }
    for (std::size_t k = 0; k < x.gates.size(); ++k) {
      auto const& gt = x.gates[k];
      auto const node = static_cast<int>(k) + 3;
      check_arg(gt.x >= 0 && gt.x < node && gt.y >= 0 && gt.y < node && gt.x != gt.y, "logic_graph gate", node,
                "must read two different earlier nodes");
    }
  }

  tools::vocab vocab_;
  tools::search_memory_limits limits_;
  tools::token v_ = 0, digit0_ = 0, assign_ = 0, equals_ = 0, true_ = 0, false_ = 0, return_ = 0, newline_ = 0;
  tools::token find_ = 0, end_ = 0, colon_ = 0, link_ = 0, ans_ = 0, eos_ = 0;
  std::array<tools::token, 4> ops_{};
};

static_assert(task_env<logic_graph>);

}  // namespace ssmlen::tasks
