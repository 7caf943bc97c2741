// SPDX-License-Identifier: Apache-2.0
//! @file lookup_learner.hpp
//! The simplest model that can length-generalize on a local protocol: a table
//! from the last W tokens of context to the next model token, learned from
//! expert traces. It measures a trace format, not a network: when W tokens
//! decide every model token (no conflicts), a fixed-memory model can follow the
//! format at any length.
//!
//! A plain table only answers contexts it has seen whole, yet most tokens of a
//! window do not matter: after a 1000-digit prompt the window is eleven digits
//! of b (never seen at 5 digits), of which only "=" decides the next token. So
//! the learner also grows a decision tree over window positions, which answers
//! the contexts the table has not seen. A node asks for the token at one
//! position; a leaf gives one answer, right for every example under it: a fixed
//! token, or a copy, "the token at window position p", which is how a format
//! repeats a label or a digit it read a few tokens earlier, and which also
//! answers with tokens that training never showed there. (The table needs no
//! copies: a context seen whole already fixes the token a copy would give.) At
//! a token a node has not seen, the node gives the answer right for most of its
//! examples. Growing a node (ask()): its examples are labelled with answers
//! right for them; it asks a position whose tokens separate them into leaves if
//! there is one, else the most recent position that tells the labels apart once
//! its tokens are merged where their labels do not differ (the digits of a
//! copied label, all copied alike, become one branch instead of ten).
//!
//! The tree depends only on the set of (context, continuation) pairs learned,
//! not on their order, and is the same under any floating-point contraction:
//! its arithmetic is exact. Satisfies agent::policy.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ssmlen::models {

template <int W>
class lookup_learner {
  static_assert(W >= 1, "lookup_learner: the window W must be at least one token");
  static_assert(W <= 64, "lookup_learner: copy answers are kept as 64-bit masks of window positions");

public:
  static constexpr int window = W;
  using context = std::array<tools::token, W>;  // oldest first; <PAD> before the start of the episode

  //! Two expert continuations of one context: the window is too short for the format.
  struct conflict {
    context ctx;
    tools::token first;
    tools::token other;
  };

  //! Learns every model token (command, thought, output) of an expert trace from the W tokens before it.
  void learn(tools::trace const& t) {
    context c;
    c.fill(tools::vocab::pad);
    for (std::size_t i = 0; i < t.size(); ++i) {
      check_arg(t.tokens[i] >= 0, "trace token", t.tokens[i], "must be a token id (>= 0)");
      if (tools::in_loss(t.roles[i])) {
        add(c, t.tokens[i]);
      }
      push(c, t.tokens[i]);
    }
  }

  //! The continuation learned for exactly this context, if it was seen (the first one, if several).
  [[nodiscard]] std::optional<tools::token> lookup(context const& c) const {
    auto const it = table_.find(c);
    if (it == table_.end()) {
      return std::nullopt;
    }
    return it->second.next;
  }

  //! Distinct W-token contexts learned.
  [[nodiscard]] std::int64_t contexts() const { return static_cast<std::int64_t>(table_.size()); }
  //! Contexts seen with two or more different continuations: W is too short for the format. Necessary, not
  //! sufficient: where a window holds labels or digits, contexts rarely repeat, so a window too short to see a
  //! copied token can still show no conflict; a length sweep is the test.
  [[nodiscard]] std::int64_t conflicts() const { return conflicts_; }
  //! The first few conflicts, for diagnostics.
  [[nodiscard]] std::vector<conflict> const& conflict_examples() const { return conflict_examples_; }
  //! Calls to act() (since construction) whose context the table had not seen (answered by the tree).
  [[nodiscard]] std::int64_t unseen() const { return unseen_; }
  //! Of those, the calls answered with a copy of a window position.
  [[nodiscard]] std::int64_t copies() const { return copies_; }
  //! Of those, the calls where the tree met a token a node had not seen (answered by that node's best answer).
  [[nodiscard]] std::int64_t guesses() const { return guesses_; }

  // agent::policy
  void reset() { ctx_.fill(tools::vocab::pad); }
  void observe(tools::token t) { push(ctx_, t); }
  //! The learned continuation of the current context; <PAD> (which no tool accepts) before any learning.
  tools::token act() {
    if (auto const it = table_.find(ctx_); it != table_.end()) {
      return it->second.next;
    }
    ++unseen_;
    if (tree_dirty_) {
      build_tree();
    }
    if (tree_.empty()) {
      return tools::vocab::pad;
    }
    std::size_t n = 0;
    while (tree_[n].position >= 0) {
      auto const& kids = tree_[n].children;
      auto const key = ctx_[static_cast<std::size_t>(tree_[n].position)];
      auto const it = std::lower_bound(kids.begin(), kids.end(), std::pair<tools::token, std::size_t>{key, 0});
      if (it == kids.end() || it->first != key) {
        ++guesses_;
        break;
      }
      n = it->second;
    }
    auto const& a = tree_[n].reply;
    if (a.copy >= 0) {
      ++copies_;
      return ctx_[static_cast<std::size_t>(a.copy)];
    }
    return a.token;
  }

private:
  struct entry {
    tools::token next;
    bool conflicted;
  };
  struct context_hash {
    std::size_t operator()(context const& c) const noexcept {
      std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over token ids
      for (auto t : c) {
        h = (h ^ static_cast<std::uint32_t>(t)) * 0x100000001b3ull;
      }
      return static_cast<std::size_t>(h ^ (h >> 29));
    }
  };
  //! A fixed token, or (copy >= 0) the token at window position `copy`.
  struct answer {
    tools::token token = tools::vocab::pad;
    int copy = -1;
  };
  struct node {
    int position = -1;  // the window position this node asks about; -1: a leaf
    answer reply;       // a leaf's answer; an inner node's answer for a token none of its children saw
    std::vector<std::pair<tools::token, std::size_t>> children;  // sorted by token; tokens may share a child
  };
  //! Label counts of a set of examples, sorted by label, and n H(label) (in fixed point, see xlogx).
  struct histogram {
    std::size_t size = 0;
    std::vector<std::pair<std::size_t, std::size_t>> counts;
    std::int64_t entropy = 0;
  };
  //! A question: the token at `position`, its tokens in categories (one child each).
  struct question {
    int position = -1;
    std::vector<std::pair<tools::token, std::size_t>> category;  // token -> category, sorted by token
    std::size_t categories = 0;
  };

  static void push(context& c, tools::token t) {
    std::shift_left(c.begin(), c.end(), 1);
    c.back() = t;
  }

  void add(context const& c, tools::token next) {
    auto const [it, fresh] = table_.try_emplace(c, entry{next, false});
    if (fresh) {
      remember(c, next);
      return;
    }
    if (it->second.next == next || it->second.conflicted) {
      return;
    }
    it->second.conflicted = true;
    remember(c, next);  // the tree sees both continuations
    ++conflicts_;
    if (conflict_examples_.size() < max_examples) {
      conflict_examples_.push_back({c, it->second.next, next});
    }
  }

  void remember(context const& c, tools::token next) {
    std::uint64_t same = 0;
    for (std::size_t p = 0; p < at_.size(); ++p) {
      at_[p].push_back(c[p]);
      same |= std::uint64_t{c[p] == next} << p;
      max_token_ = std::max(max_token_, c[p]);
    }
    next_.push_back(next);
    same_.push_back(same);
    max_token_ = std::max(max_token_, next);
    tree_dirty_ = true;
  }

  [[nodiscard]] bool fits(answer const& a, std::size_t i) const {
    return a.copy >= 0 ? (same_[i] >> a.copy & 1u) != 0 : next_[i] == a.token;
  }

  // The answer right for the most examples of `idx`, and for how many: the most common continuation (the smaller id
  // on a tie), or a copy of the position that holds the continuation most often (the most recent on a tie). A
  // constant wins a tie with a copy: where every continuation is one token t and some position always holds t, the
  // examples cannot tell "t" from "copy that position", and the constant does not depend on a token the tree never
  // asked about. A copy wins only where the continuations differ, which is the evidence that they are copied.
  std::pair<answer, std::size_t> best_answer(std::vector<std::size_t> const& idx) {
    answer best;
    std::size_t right = 0;
    for (auto i : idx) {
      ++count_[static_cast<std::size_t>(next_[i])];
    }
    for (auto i : idx) {
      auto const t = next_[i];
      if (auto& k = count_[static_cast<std::size_t>(t)]; k != 0) {
        if (k > right || (k == right && t < best.token)) {
          right = k;
          best.token = t;
        }
        k = 0;
      }
    }
    std::array<std::size_t, W> held{};
    for (auto i : idx) {
      for (auto s = same_[i]; s != 0; s &= s - 1) {
        ++held[static_cast<std::size_t>(std::countr_zero(s))];
      }
    }
    for (int p = W - 1; p >= 0; --p) {
      if (held[static_cast<std::size_t>(p)] > right) {
        right = held[static_cast<std::size_t>(p)];
        best.copy = p;
      }
    }
    return {best, right};
  }

  // Labels every example of `idx` (label_, 0-based) with an answer right for it, greedily: the answer right for the
  // most examples labels them, the best answer for the rest labels those, and so on. A copied token so gets one
  // label whatever its value, which makes a position that tells which position is copied informative about the
  // labels, and the copied position itself not. Returns the first answer, whether it fits every example, and the
  // number of labels.
  std::tuple<answer, bool, std::size_t> label(std::vector<std::size_t> const& idx) {
    auto const [first, right] = best_answer(idx);
    if (right == idx.size()) {
      return {first, true, 1};
    }
    auto rest = idx;
    std::size_t labels = 0;
    for (auto a = first; !rest.empty(); a = best_answer(rest).first, ++labels) {
      std::erase_if(rest, [&](std::size_t i) {
        if (!fits(a, i)) {
          return false;
        }
        label_[i] = labels;
        return true;
      });
    }
    return {first, false, labels};
  }

  // Information is counted in fixed point (2^-24 nats), so that every sum and comparison that grows the tree is
  // exact: a compiler that fuses a multiply and an add (as -march=native allows) cannot change the tree.
  static constexpr double fixed_one = 16777216.0;
  // c ln c in fixed point, for c up to the number of examples.
  [[nodiscard]] std::int64_t xlogx(std::size_t c) const { return xlogx_[c]; }

  // Half the chi-squared value exceeded with probability about 1e-12 at `df` degrees of freedom (Wilson-Hilferty:
  // z = 7), in fixed point: the most information two groups may lose by sharing a category. So strict a level
  // because examples are far from independent (one trace repeats a label's digits in many contexts), and a test
  // that assumed independence would keep chance differences between copied digits apart.
  static std::int64_t merge_allowance(std::size_t df) {
    if (df == 0) {
      return 0;
    }
    auto const k = static_cast<double>(df);
    auto const v = 2.0 / (9.0 * k);
    // c = 1 - v + z sqrt(v), added in integers so that no multiply-add is fused.
    auto const c = static_cast<double>(std::llround((1.0 - v) * 1099511627776.0) +
                                       std::llround(7.0 * std::sqrt(v) * 1099511627776.0)) /
                   1099511627776.0;
    return std::llround(0.5 * k * c * c * c * fixed_one);
  }

  // n H(label) of the union of two histograms, and how many labels it has, without building it.
  [[nodiscard]] std::pair<std::int64_t, std::size_t> union_entropy(histogram const& a, histogram const& b) const {
    auto h = xlogx(a.size + b.size);
    std::size_t labels = 0, i = 0, j = 0;
    while (i < a.counts.size() || j < b.counts.size()) {
      std::size_t c = 0;
      if (j == b.counts.size() || (i < a.counts.size() && a.counts[i].first < b.counts[j].first)) {
        c = a.counts[i++].second;
      } else if (i == a.counts.size() || b.counts[j].first < a.counts[i].first) {
        c = b.counts[j++].second;
      } else {
        c = a.counts[i++].second + b.counts[j++].second;
      }
      h -= xlogx(c);
      ++labels;
    }
    return {h, labels};
  }

  void merge_into(histogram& a, histogram const& b) const {
    std::vector<std::pair<std::size_t, std::size_t>> m;
    m.reserve(a.counts.size() + b.counts.size());
    std::merge(a.counts.begin(), a.counts.end(), b.counts.begin(), b.counts.end(), std::back_inserter(m));
    a.counts.clear();
    for (auto const& [l, c] : m) {
      if (!a.counts.empty() && a.counts.back().first == l) {
        a.counts.back().second += c;
      } else {
        a.counts.emplace_back(l, c);
      }
    }
    a.size += b.size;
    a.entropy = xlogx(a.size);
    for (auto const& [l, c] : a.counts) {
      a.entropy -= xlogx(c);
    }
  }

  // Whether grouping `idx` by the token at position p leaves every group with one answer right for all of it (the
  // children would all be leaves), and how many groups there are.
  std::pair<bool, std::size_t> separates(std::vector<std::size_t> const& idx, std::size_t p) {
    auto const& at = at_[p];
    std::size_t groups = 0;
    for (auto i : idx) {
      auto const key = static_cast<std::size_t>(at[i]);
      if (size_[key]++ == 0) {
        ++groups;
        first_[key] = next_[i];
        one_token_[key] = 1;
        copyable_[key] = same_[i];
      } else {
        one_token_[key] &= static_cast<std::uint8_t>(first_[key] == next_[i]);
        copyable_[key] &= same_[i];
      }
    }
    bool leaves = true;
    for (auto i : idx) {
      auto const key = static_cast<std::size_t>(at[i]);
      if (size_[key] != 0) {
        leaves = leaves && (one_token_[key] != 0 || copyable_[key] != 0);
        size_[key] = 0;
      }
    }
    return {leaves, groups};
  }

  // The question "token at p", its tokens merged into categories where their label histograms do not differ by
  // more than chance (merge_allowance), largest groups first, each into the category it fits best.
  question categorize(std::vector<std::size_t> const& idx, std::size_t p, std::size_t labels) {
    auto const& at = at_[p];
    std::vector<tools::token> keys;
    std::vector<histogram> groups;
    for (auto i : idx) {
      auto const key = static_cast<std::size_t>(at[i]);
      if (size_[key]++ == 0) {
        index_[key] = keys.size();
        keys.push_back(at[i]);
        groups.emplace_back();
      }
      if (pair_count_[key * labels + label_[i]]++ == 0) {
        groups[index_[key]].counts.emplace_back(label_[i], 0);
      }
    }
    for (std::size_t g = 0; g < keys.size(); ++g) {
      auto const key = static_cast<std::size_t>(keys[g]);
      auto& h = groups[g];
      h.size = size_[key];
      size_[key] = 0;
      std::sort(h.counts.begin(), h.counts.end());
      h.entropy = xlogx(h.size);
      for (auto& [l, c] : h.counts) {
        c = std::exchange(pair_count_[key * labels + l], 0);
        h.entropy -= xlogx(c);
      }
    }
    std::vector<std::size_t> order(keys.size());
    for (std::size_t g = 0; g < order.size(); ++g) {
      order[g] = g;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return groups[a].size != groups[b].size ? groups[a].size > groups[b].size : keys[a] < keys[b];
    });
    std::vector<histogram> cats;
    std::vector<std::size_t> cat_of(keys.size());
    for (auto g : order) {
      std::size_t best = cats.size();
      std::int64_t best_excess = 0;
      for (std::size_t c = 0; c < cats.size(); ++c) {
        auto const [h, union_labels] = union_entropy(cats[c], groups[g]);
        auto const excess = (h - cats[c].entropy - groups[g].entropy) - merge_allowance(union_labels - 1);
        if (excess <= 0 && (best == cats.size() || excess < best_excess)) {
          best = c;
          best_excess = excess;
        }
      }
      if (best == cats.size()) {
        cats.push_back(std::move(groups[g]));
      } else {
        merge_into(cats[best], groups[g]);
      }
      cat_of[g] = best;
    }
    question q;
    q.position = static_cast<int>(p);
    q.categories = cats.size();
    for (std::size_t g = 0; g < keys.size(); ++g) {
      q.category.emplace_back(keys[g], cat_of[g]);
    }
    std::sort(q.category.begin(), q.category.end());
    return q;
  }

  // The question "token at p", one category per token.
  question token_by_token(std::vector<std::size_t> const& idx, std::size_t p) const {
    question q;
    q.position = static_cast<int>(p);
    for (auto i : idx) {
      q.category.emplace_back(at_[p][i], 0);
    }
    std::sort(q.category.begin(), q.category.end());
    q.category.erase(std::unique(q.category.begin(), q.category.end()), q.category.end());
    for (std::size_t c = 0; c < q.category.size(); ++c) {
      q.category[c].second = c;
    }
    q.categories = q.category.size();
    return q;
  }

  // The question a node over `idx` asks, if any: a position whose tokens separate the examples into leaves, with the
  // fewest distinct tokens (the simplest explanation: a carry digit, 2 values, beats an earlier sum digit, 10 values,
  // that only happens to separate them), token by token; else the most recent position whose tokens, merged where
  // their labels do not differ, still fall into two or more categories; else (no position tells the labels apart on
  // its own: the value of "a or b" against "a or not b" depends on both) the most recent position that varies,
  // token by token. Ties go to the most recent position.
  question ask(std::vector<std::size_t> const& idx, std::size_t labels) {
    int separating = -1, varies = -1;
    std::size_t fewest = 0;
    for (int p = W - 1; p >= 0; --p) {
      auto const [leaves, groups] = separates(idx, static_cast<std::size_t>(p));
      varies = varies < 0 && groups >= 2 ? p : varies;
      if (groups >= 2 && leaves && (separating < 0 || groups < fewest)) {
        separating = p;
        fewest = groups;
      }
    }
    if (separating >= 0) {
      return token_by_token(idx, static_cast<std::size_t>(separating));
    }
    if (pair_count_.size() < tokens_ * labels) {
      pair_count_.resize(tokens_ * labels, 0);
    }
    for (int p = W - 1; p >= 0; --p) {
      if (auto q = categorize(idx, static_cast<std::size_t>(p), labels); q.categories >= 2) {
        return q;
      }
    }
    return varies < 0 ? question{} : token_by_token(idx, static_cast<std::size_t>(varies));
  }

  std::size_t grow(std::vector<std::size_t> idx) {
    auto const at = tree_.size();
    auto const [best, leaf, labels] = label(idx);
    tree_.push_back({-1, best, {}});
    if (leaf) {
      return at;
    }
    auto q = ask(idx, labels);
    if (q.position < 0) {
      return at;  // no position varies: a conflict; the leaf gives the best answer
    }
    auto const& at_q = at_[static_cast<std::size_t>(q.position)];
    std::vector<std::vector<std::size_t>> parts(q.categories);
    for (auto i : idx) {
      auto const it =
          std::lower_bound(q.category.begin(), q.category.end(), std::pair<tools::token, std::size_t>{at_q[i], 0});
      parts[it->second].push_back(i);
    }
    idx = {};
    std::vector<std::size_t> child(q.categories);
    for (std::size_t c = 0; c < q.categories; ++c) {
      child[c] = grow(std::move(parts[c]));
    }
    tree_[at].position = q.position;
    for (auto const& [t, c] : q.category) {
      tree_[at].children.emplace_back(t, child[c]);
    }
    return at;
  }

  void build_tree() {
    tree_.clear();
    tree_dirty_ = false;
    if (next_.empty()) {
      return;
    }
    // Scratch indexed by token id (or label), all zero between uses.
    tokens_ = static_cast<std::size_t>(max_token_) + 1;
    count_.assign(tokens_ + W, 0);  // continuations, or labels (at most one per token and one per position)
    size_.assign(tokens_, 0);
    index_.assign(tokens_, 0);
    first_.assign(tokens_, 0);
    one_token_.assign(tokens_, 0);
    copyable_.assign(tokens_, 0);
    pair_count_.clear();
    label_.assign(next_.size(), 0);
    xlogx_.resize(next_.size() + 1);
    for (std::size_t c = 0; c < xlogx_.size(); ++c) {
      xlogx_[c] = c < 2 ? 0 : std::llround(static_cast<double>(c) * std::log(static_cast<double>(c)) * fixed_one);
    }
    std::vector<std::size_t> idx(next_.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
      idx[i] = i;
    }
    grow(std::move(idx));
  }

  static constexpr std::size_t max_examples = 8;
  std::unordered_map<context, entry, context_hash> table_;
  // Examples, one per distinct (context, continuation) in learning order, stored by window position so that the
  // tree's passes over one position read contiguous memory.
  std::array<std::vector<tools::token>, W> at_;  // at_[p][i]: the token at position p of example i
  std::vector<tools::token> next_;
  std::vector<std::uint64_t> same_;  // bit p: at_[p][i] == next_[i], i.e. "copy position p" is right for it
  tools::token max_token_ = 0;
  std::vector<node> tree_;
  bool tree_dirty_ = false;
  std::size_t tokens_ = 0;
  std::vector<std::size_t> count_, size_, index_, pair_count_, label_;
  std::vector<std::int64_t> xlogx_;  // c ln c in fixed point, for c up to the number of examples
  std::vector<tools::token> first_;
  std::vector<std::uint8_t> one_token_;
  std::vector<std::uint64_t> copyable_;
  std::int64_t conflicts_ = 0;
  std::vector<conflict> conflict_examples_;
  std::int64_t unseen_ = 0;
  std::int64_t copies_ = 0;
  std::int64_t guesses_ = 0;
  context ctx_ = [] {
    context c;
    c.fill(tools::vocab::pad);
    return c;
  }();
};

}  // namespace ssmlen::models
