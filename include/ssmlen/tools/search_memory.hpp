// SPDX-License-Identifier: Apache-2.0
//! @file search_memory.hpp
//! The search-memory tool (grep over lines). Memory is a sequence of lines: the
//! prompt's lines, then the lines the model writes; a line ends at a newline
//! token. The multi-token command `[FIND] x1 .. xk [END]` observes every
//! complete line that contains x1 .. xk, in memory order, each with its
//! newline. A model that can only look a few tokens back can still reach any
//! line of a long program, which is what lets it evaluate graphs of any size.
//! The tool answers anything a model emits: malformed or oversized searches and
//! exhausted limits are invalid actions with a reason.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::tools {

//! Bounds that turn a runaway episode into an invalid action instead of unbounded memory or output.
struct search_memory_limits {
  std::int64_t max_memory = std::int64_t{1} << 24;        // tokens in memory (prompt + stored tokens)
  std::int64_t max_query = 32;                            // tokens between [FIND] and [END]
  std::int64_t max_observation = std::int64_t{1} << 16;   // tokens one search may return
  std::int64_t max_observations = std::int64_t{1} << 26;  // tokens all searches of an episode may return
};

//! The command and line tokens of a search memory, by name.
struct search_memory_tokens {
  std::string find = "[FIND]";
  std::string end = "[END]";
  std::string newline = "<NL>";
};

class search_memory {
public:
  //! Looks up the command and newline tokens in `v`, which must define them.
  explicit search_memory(vocab const& v, search_memory_limits limits = {}, search_memory_tokens names = {})
      : limits_(limits), vocab_size_(v.size()), find_(v.id(names.find)), end_(v.id(names.end)),
        newline_(v.id(names.newline)) {
    check_arg(limits.max_memory > 0, "search_memory_limits.max_memory", limits.max_memory, "must be positive");
    check_arg(limits.max_query > 0, "search_memory_limits.max_query", limits.max_query, "must be positive");
    check_arg(limits.max_observation > 0, "search_memory_limits.max_observation", limits.max_observation,
              "must be positive");
    check_arg(limits.max_observations >= 0, "search_memory_limits.max_observations", limits.max_observations,
              "must be non-negative");
    check(find_ != end_ && find_ != newline_ && end_ != newline_,
          "search_memory: [FIND], [END] and the newline must be three different tokens");
    pair_index_ = vocab_size_ <= max_pair_vocab;
    by_token_.resize(static_cast<std::size_t>(vocab_size_));
    if (pair_index_) {
      by_pair_.resize(static_cast<std::size_t>(vocab_size_ * vocab_size_));
    }
  }

  //! Memory := the prompt's tokens; its complete lines become searchable. No search is pending.
  void reset(std::span<const token> prompt) {
    for (auto b : touched_) {
      bucket(b).clear();
    }
    touched_.clear();
    memory_.clear();
    line_start_.clear();
    open_ = 0;
    query_.clear();
    pending_ = false;
    observed_ = 0;
    prompt_too_long_ = static_cast<std::int64_t>(prompt.size()) > limits_.max_memory;
    if (prompt_too_long_) {
      return;
    }
    for (auto t : prompt) {
      check_arg(t > vocab::pad && t < vocab_size_, "prompt token", t, "must be a vocabulary id other than <PAD>");
      append(t);
    }
  }

  tool_reply feed(token t) {
    if (prompt_too_long_) {
      return invalid("prompt longer than the memory limit");
    }
    if (t <= vocab::pad || t >= vocab_size_) {
      return invalid(t == vocab::pad ? "<PAD> emitted" : "token id outside the vocabulary");
    }
    if (t == find_) {
      if (pending_) {
        return invalid("[FIND] inside a search");
      }
      pending_ = true;
      query_.clear();
      return {tool_reply_kind::pending};
    }
    if (t == end_) {
      if (!pending_) {
        return invalid("[END] outside a search");
      }
      pending_ = false;
      if (query_.empty()) {
        return invalid("empty search");
      }
      return search();
    }
    if (pending_) {
      if (static_cast<std::int64_t>(query_.size()) >= limits_.max_query) {
        pending_ = false;
        return invalid(oversized_why());
      }
      query_.push_back(t);
      return {tool_reply_kind::pending};
    }
    if (static_cast<std::int64_t>(memory_.size()) >= limits_.max_memory) {
      return invalid("memory limit reached");
    }
    append(t);
    return {tool_reply_kind::stored};
  }

  // Inspection, for tests and trace viewers.
  [[nodiscard]] std::span<const token> memory() const { return memory_; }
  //! Complete lines in memory.
  [[nodiscard]] std::int64_t lines() const { return static_cast<std::int64_t>(line_start_.size()); }
  //! Whether a search has started ([FIND]) and not ended: an episode that stops here left it unterminated.
  [[nodiscard]] bool pending() const { return pending_; }
  //! Observation tokens returned in this episode.
  [[nodiscard]] std::int64_t observations() const { return observed_; }
  [[nodiscard]] search_memory_limits const& limits() const { return limits_; }

  //! The lines of `memory` (complete lines only) containing `query`, concatenated: the reference semantics
  //! of a search, written plainly, for tests.
  [[nodiscard]] static std::vector<token> grep(std::span<const token> memory, std::span<const token> query,
                                               token newline) {
    std::vector<token> out;
    std::size_t start = 0;
    for (std::size_t i = 0; i < memory.size(); ++i) {
      if (memory[i] != newline) {
        continue;
      }
      auto const line = memory.subspan(start, i + 1 - start);
      if (std::search(line.begin(), line.end(), query.begin(), query.end()) != line.end()) {
        out.insert(out.end(), line.begin(), line.end());
      }
      start = i + 1;
    }
    return out;
  }

private:
  static constexpr std::int64_t max_pair_vocab = 256;  // index token pairs while the table stays small (64 Ki)

  static tool_reply invalid(std::string_view why) { return {tool_reply_kind::invalid, {}, why}; }

  std::string_view oversized_why() {
    why_ = "search longer than " + std::to_string(limits_.max_query) + " tokens";
    return why_;
  }

  // Buckets 0..V-1 index single tokens, V.. index pairs (a, b) as V + a * V + b.
  std::vector<std::int32_t>& bucket(std::size_t b) {
    auto const v = static_cast<std::size_t>(vocab_size_);
    return b < v ? by_token_[b] : by_pair_[b - v];
  }
  void index(std::size_t b, std::int32_t line) {
    auto& list = bucket(b);
    if (list.empty()) {
      touched_.push_back(b);
    }
    if (list.empty() || list.back() != line) {
      list.push_back(line);
    }
  }

  void append(token t) {
    memory_.push_back(t);
    if (t != newline_) {
      return;
    }
    // A line is complete: index its tokens and adjacent pairs.
    auto const line = static_cast<std::int32_t>(line_start_.size());
    line_start_.push_back(open_);
    auto const v = static_cast<std::size_t>(vocab_size_);
    for (std::size_t i = open_; i < memory_.size(); ++i) {
      auto const a = static_cast<std::size_t>(memory_[i]);
      index(a, line);
      if (pair_index_ && i + 1 < memory_.size()) {
        index(v + a * v + static_cast<std::size_t>(memory_[i + 1]), line);
      }
    }
    open_ = memory_.size();
  }

  std::span<const token> line(std::int32_t i) const {
    auto const start = line_start_[static_cast<std::size_t>(i)];
    auto const stop =
        static_cast<std::size_t>(i) + 1 < line_start_.size() ? line_start_[static_cast<std::size_t>(i) + 1] : open_;
    return std::span<const token>(memory_).subspan(start, stop - start);
  }

  tool_reply search() {
    // Candidates: the lines holding the query's rarest token (or adjacent pair).
    auto const v = static_cast<std::size_t>(vocab_size_);
    std::vector<std::int32_t> const* best = &by_token_[static_cast<std::size_t>(query_[0])];
    for (std::size_t i = 0; i < query_.size(); ++i) {
      auto const a = static_cast<std::size_t>(query_[i]);
      if (by_token_[a].size() < best->size()) {
        best = &by_token_[a];
      }
      if (pair_index_ && i + 1 < query_.size()) {
        auto const& p = by_pair_[a * v + static_cast<std::size_t>(query_[i + 1])];
        if (p.size() < best->size()) {
          best = &p;
        }
      }
    }
    result_.clear();
    for (auto i : *best) {
      auto const l = line(i);
      if (std::search(l.begin(), l.end(), query_.begin(), query_.end()) == l.end()) {
        continue;
      }
      if (static_cast<std::int64_t>(result_.size() + l.size()) > limits_.max_observation) {
        return invalid("search result longer than the observation limit");
      }
      result_.insert(result_.end(), l.begin(), l.end());
    }
    if (observed_ + static_cast<std::int64_t>(result_.size()) > limits_.max_observations) {
      return invalid("observation limit reached");
    }
    observed_ += static_cast<std::int64_t>(result_.size());
    return {tool_reply_kind::observe, result_};
  }

  search_memory_limits limits_;
  std::int64_t vocab_size_;
  token find_, end_, newline_;
  bool pair_index_ = false;
  std::vector<std::vector<std::int32_t>> by_token_;  // token -> complete lines holding it, ascending
  std::vector<std::vector<std::int32_t>> by_pair_;   // (a, b) -> complete lines holding "a b", ascending
  std::vector<std::size_t> touched_;                 // non-empty buckets, cleared on reset
  std::vector<token> memory_;
  std::vector<std::size_t> line_start_;  // start of every complete line
  std::size_t open_ = 0;                 // start of the line being written
  std::vector<token> query_;
  std::vector<token> result_;
  std::string why_;
  bool pending_ = false;
  bool prompt_too_long_ = false;
  std::int64_t observed_ = 0;
};

static_assert(tool<search_memory>);

}  // namespace ssmlen::tools
