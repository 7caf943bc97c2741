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
//! the learner also grows a decision tree over window positions: each node asks
//! for the token at one position, until the continuations seen under it agree.
//! It asks the position that separates them completely with the fewest distinct
//! tokens if there is one, else the most recent position that varies. A context
//! the table has not seen follows the tree; at a token a node has not seen, it
//! answers the node's most common continuation. It satisfies agent::policy.
#pragma once

#include <ssmlen/tools/protocol.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ssmlen::models {

template <int W>
class lookup_learner {
  static_assert(W >= 1, "lookup_learner: the window W must be at least one token");

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
  //! Contexts seen with two or more different continuations: W is too short for the format.
  [[nodiscard]] std::int64_t conflicts() const { return conflicts_; }
  //! The first few conflicts, for diagnostics.
  [[nodiscard]] std::vector<conflict> const& conflict_examples() const { return conflict_examples_; }
  //! Calls to act() (since construction) whose context the table had not seen (answered by the tree).
  [[nodiscard]] std::int64_t unseen() const { return unseen_; }
  //! Of those, the calls where the tree met a token it had not seen at a node (answered the node's majority).
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
        return tree_[n].majority;
      }
      n = it->second;
    }
    return tree_[n].majority;
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
  struct node {
    int position = -1;  // the window slot this node asks about; -1: a leaf
    tools::token majority = tools::vocab::pad;
    std::vector<std::pair<tools::token, std::size_t>> children;  // sorted by token
  };
  struct example {
    context ctx;
    tools::token next;
  };

  static void push(context& c, tools::token t) {
    std::shift_left(c.begin(), c.end(), 1);
    c.back() = t;
  }

  void add(context const& c, tools::token next) {
    auto const [it, fresh] = table_.try_emplace(c, entry{next, false});
    if (fresh) {
      examples_.push_back({c, next});
      tree_dirty_ = true;
      return;
    }
    if (it->second.next == next || it->second.conflicted) {
      return;
    }
    it->second.conflicted = true;
    examples_.push_back({c, next});  // the tree sees both continuations
    tree_dirty_ = true;
    ++conflicts_;
    if (conflict_examples_.size() < max_examples) {
      conflict_examples_.push_back({c, it->second.next, next});
    }
  }

  // How many examples in `idx` differ from their group's most common continuation, grouping by `key(i)`; also counts
  // the groups.
  template <class Key>
  std::int64_t impurity(std::vector<std::size_t>& idx, Key key, std::size_t& groups) const {
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
      return std::pair{key(a), examples_[a].next} < std::pair{key(b), examples_[b].next};
    });
    std::int64_t wrong = 0;
    groups = 0;
    for (std::size_t g = 0; g < idx.size();) {
      ++groups;
      std::size_t e = g;
      std::int64_t best = 0;
      while (e < idx.size() && key(idx[e]) == key(idx[g])) {
        std::size_t r = e;
        while (r < idx.size() && key(idx[r]) == key(idx[g]) && examples_[idx[r]].next == examples_[idx[e]].next) {
          ++r;
        }
        best = std::max<std::int64_t>(best, static_cast<std::int64_t>(r - e));
        e = r;
      }
      wrong += static_cast<std::int64_t>(e - g) - best;
      g = e;
    }
    return wrong;
  }

  tools::token majority(std::vector<std::size_t> const& idx) const {
    std::vector<tools::token> next;
    next.reserve(idx.size());
    for (auto i : idx) {
      next.push_back(examples_[i].next);
    }
    std::sort(next.begin(), next.end());
    tools::token best = next.front();
    std::size_t best_run = 0;
    for (std::size_t g = 0; g < next.size();) {
      auto e = g;
      while (e < next.size() && next[e] == next[g]) {
        ++e;
      }
      if (e - g > best_run) {
        best_run = e - g;
        best = next[g];
      }
      g = e;
    }
    return best;
  }

  std::size_t grow(std::vector<std::size_t> idx, std::uint64_t used) {
    auto const at = tree_.size();
    tree_.push_back({-1, majority(idx), {}});
    auto const pure = [&] {
      return std::all_of(idx.begin(), idx.end(),
                         [&](std::size_t i) { return examples_[i].next == examples_[idx[0]].next; });
    };
    if (pure()) {
      return at;
    }
    // A position that separates the continuations completely, with the fewest distinct tokens (the simplest
    // explanation: a carry digit beats an earlier sum digit that only happens to separate them); else the most
    // recent position that is not constant here.
    int best_pos = -1;
    int recent_pos = -1;
    std::size_t best_groups = 0;
    for (int p = W - 1; p >= 0; --p) {
      if (used >> p & 1u) {
        continue;
      }
      auto const key = [&](std::size_t i) { return examples_[i].ctx[static_cast<std::size_t>(p)]; };
      std::size_t groups = 0;
      auto const wrong = impurity(idx, key, groups);
      if (groups < 2) {
        continue;
      }
      recent_pos = recent_pos < 0 ? p : recent_pos;
      if (wrong == 0 && (best_pos < 0 || groups < best_groups)) {
        best_pos = p;
        best_groups = groups;
      }
    }
    best_pos = best_pos < 0 ? recent_pos : best_pos;
    if (best_pos < 0) {
      return at;  // every position asked or constant: a conflict; the leaf answers the majority
    }
    auto const pos = static_cast<std::size_t>(best_pos);
    std::sort(idx.begin(), idx.end(),
              [&](std::size_t a, std::size_t b) { return examples_[a].ctx[pos] < examples_[b].ctx[pos]; });
    tree_[at].position = best_pos;
    std::vector<std::pair<tools::token, std::size_t>> kids;
    for (std::size_t g = 0; g < idx.size();) {
      auto e = g;
      while (e < idx.size() && examples_[idx[e]].ctx[pos] == examples_[idx[g]].ctx[pos]) {
        ++e;
      }
      auto const key = examples_[idx[g]].ctx[pos];
      auto const child = grow(std::vector<std::size_t>(idx.begin() + static_cast<std::ptrdiff_t>(g),
                                                       idx.begin() + static_cast<std::ptrdiff_t>(e)),
                              used | (std::uint64_t{1} << best_pos));
      kids.emplace_back(key, child);
      g = e;
    }
    tree_[at].children = std::move(kids);
    return at;
  }

  void build_tree() {
    static_assert(W <= 64, "lookup_learner: the tree tracks asked positions in 64 bits");
    tree_.clear();
    tree_dirty_ = false;
    if (examples_.empty()) {
      return;
    }
    std::vector<std::size_t> idx(examples_.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
      idx[i] = i;
    }
    grow(std::move(idx), 0);
  }

  static constexpr std::size_t max_examples = 8;
  std::unordered_map<context, entry, context_hash> table_;
  std::vector<example> examples_;  // one per distinct (context, continuation), in learning order
  std::vector<node> tree_;
  bool tree_dirty_ = false;
  std::int64_t conflicts_ = 0;
  std::vector<conflict> conflict_examples_;
  std::int64_t unseen_ = 0;
  std::int64_t guesses_ = 0;
  context ctx_ = [] {
    context c;
    c.fill(tools::vocab::pad);
    return c;
  }();
};

}  // namespace ssmlen::models
