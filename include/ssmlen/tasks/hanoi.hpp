// SPDX-License-Identifier: Apache-2.0
//! @file hanoi.hpp
//! Tower of Hanoi with a pointer-memory tool, in the paper's two variants.
//! Iterative (one pointer): a parity pass, then for every move the record
//! `(d) X Y $` and a copy of the whole state with that one move applied.
//! Recursive (two pointers): the move lists for 1, 2, .., n disks, each built
//! by copying the previous list twice with rods relabelled around the largest
//! disk's move. Disks are n distinct sizes from 1..100, one token each. The
//! answer has 2^n - 1 moves, so traces grow exponentially; what stays bounded
//! is the window each token depends on, which is what a fixed-memory model
//! needs. Two habits keep a 100-token alphabet learnable from short towers:
//! a disk the pointer reads is copied (or read in a step that reads nothing
//! else), and a rod is only ever decided from rods and marks, never by looking
//! past a disk. Trace formats are in docs/tasks.md.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/pointer_memory.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ssmlen::tasks {

//! A tower: distinct disk sizes from 1..100, bottom (largest) first. All start on rod A; the goal is rod C.
struct hanoi_instance {
  std::vector<int> disks;
  friend bool operator==(hanoi_instance const&, hanoi_instance const&) = default;
};

//! One move of the canonical solution: the disk's rank (1 = smallest) and its rods (0 = A, 1 = B, 2 = C).
struct hanoi_move {
  int rank;
  int from;
  int to;
  friend bool operator==(hanoi_move const&, hanoi_move const&) = default;
};

//! The 2^n - 1 moves that carry n disks from A to C (the unique shortest solution), by plain recursion.
inline std::vector<hanoi_move> hanoi_solution(int n) {
  std::vector<hanoi_move> moves;
  moves.reserve((std::size_t{1} << n) - 1);
  auto solve = [&](auto&& self, int k, int from, int to, int via) -> void {
    if (k == 0) {
      return;
    }
    self(self, k - 1, from, via, to);
    moves.push_back({k, from, to});
    self(self, k - 1, via, to, from);
  };
  solve(solve, n, 0, 2, 1);
  return moves;
}

//! Sampling, tokens and the trace writer shared by both variants.
struct hanoi_common {
  static constexpr int max_size = 100;  // disk sizes are 1..100
  static constexpr int max_disks = 16;  // 2^16 moves: traces of about ten million tokens

  //! n distinct sizes drawn uniformly from 1..100 without replacement, largest first.
  static hanoi_instance tower(rng& g, int n) {
    check_arg(n >= 1 && n <= max_disks, "n", n, "must be in [1, 16] disks");
    std::array<int, max_size> sizes{};
    for (int i = 0; i < max_size; ++i) {
      sizes[static_cast<std::size_t>(i)] = i + 1;
    }
    for (int i = 0; i < n; ++i) {  // a partial Fisher-Yates shuffle
      auto const j = static_cast<std::size_t>(g.uniform_int(i, max_size - 1));
      std::swap(sizes[static_cast<std::size_t>(i)], sizes[j]);
    }
    hanoi_instance x{{sizes.begin(), sizes.begin() + n}};
    std::sort(x.disks.begin(), x.disks.end(), std::greater<>());
    return x;
  }
  static hanoi_instance sample(rng& g, int n) {
    check_arg(n >= 1 && n <= max_disks, "n", n, "must be in [1, 16] disks");
    return tower(g, static_cast<int>(g.uniform_int(1, n)));
  }
  static void validate(hanoi_instance const& x) {
    auto const n = static_cast<int>(x.disks.size());
    check_arg(n >= 1 && n <= max_disks, "disks", n, "must be in [1, 16]");
    for (std::size_t i = 0; i < x.disks.size(); ++i) {
      check_arg(x.disks[i] >= 1 && x.disks[i] <= max_size, "disk size", x.disks[i], "must be in [1, 100]");
      check_arg(i == 0 || x.disks[i] < x.disks[i - 1], "disk size", x.disks[i],
                "must be smaller than the disk below it (distinct sizes, largest first)");
    }
  }
  static nlohmann::json describe(hanoi_instance const& x) {
    return {{"disks", x.disks}, {"moves", (std::int64_t{1} << x.disks.size()) - 1}};
  }

  //! The tokens both variants share: disks `(1)`..`(100)`, rods, `$` (ends a move), `=` (ends the prompt).
  static void add_common_tokens(tools::vocab& v) {
    for (int s = 1; s <= max_size; ++s) {
      std::string name(1, '(');  // appended piecewise: g++ 12 warns (-Wrestrict) on "(" + std::string&&
      name += std::to_string(s);
      name += ')';
      v.add(name);
    }
    for (auto name : {"A", "B", "C", "$", "=", "[ANS]", "<EOS>", "[NIL]"}) {
      v.add(name);
    }
  }
  //! Disk tokens are ids 1..100 in every Hanoi vocabulary.
  static constexpr tools::token disk(int size) { return size; }
  static constexpr bool is_disk(tools::token t) { return t >= 1 && t <= max_size; }

  //! `(d1) (d2) .. (dn) =`: the tower from the top (smallest) disk down.
  static std::vector<tools::token> prompt(hanoi_instance const& x, tools::token equals) {
    std::vector<tools::token> p;
    p.reserve(x.disks.size() + 1);
    for (auto it = x.disks.rbegin(); it != x.disks.rend(); ++it) {
      p.push_back(disk(*it));
    }
    p.push_back(equals);
    return p;
  }

  //! Drives a fresh tool with the expert's tokens and records the trace with roles.
  template <class Tool>
  struct writer {
    Tool tool;
    tools::trace t;
    tools::token ans;
    bool answering = false;

    writer(Tool fresh, std::vector<tools::token> const& prompt, tools::token ans_token, std::size_t reserve)
        : tool(std::move(fresh)), ans(ans_token) {
      t.reserve(prompt.size() + reserve);
      tool.reset(prompt);
      for (auto p : prompt) {
        t.push(p, tools::role::input);
      }
    }
    void cmd(tools::token c) {
      auto const r = tool.feed(c);
      check(r.kind == tools::tool_reply_kind::accepted, "hanoi: the expert's command was refused");
      t.push(c, tools::role::command);
    }
    tools::token read(tools::token c) {
      auto const r = tool.feed(c);
      check(r.kind == tools::tool_reply_kind::observe && r.observation.size() == 1,
            "hanoi: the expert's read was refused");
      t.push(c, tools::role::command);
      t.push(r.observation[0], tools::role::observation);
      return r.observation[0];
    }
    void store(tools::token s) {
      auto const r = tool.feed(s);
      check(r.kind == tools::tool_reply_kind::stored, "hanoi: the expert's note was refused");
      t.push(s, answering ? tools::role::output : tools::role::thought);
      answering = answering || s == ans;
    }
    void end(tools::token eos) { t.push(eos, tools::role::output); }
  };

  //! Ids of the pointer commands of pointer k (0-based) in `v`.
  struct pointer_ids {
    tools::token create, left, right, read;
    static pointer_ids of(tools::vocab const& v, int k) {
      return {v.id(tools::pointer_command_name(k + 1, "new")), v.id(tools::pointer_command_name(k + 1, "left")),
              v.id(tools::pointer_command_name(k + 1, "right")), v.id(tools::pointer_command_name(k + 1, "read"))};
    }
  };
};

//! What both variants share: the vocabulary and the tool's limits, sampling, the prompt, the move record and the
//! exact-match check against Derived::solution(x).
template <class Derived, class Tool>
class hanoi_task {
public:
  using instance = hanoi_instance;
  using tool_type = Tool;

  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }
  //! Training distribution: n' ~ U{1..n} disks.
  [[nodiscard]] instance sample(rng& g, int n) const { return hanoi_common::sample(g, n); }
  //! Test distribution: exactly n disks.
  [[nodiscard]] instance sample_exact(rng& g, int n) const { return hanoi_common::tower(g, n); }
  [[nodiscard]] nlohmann::json describe(instance const& x) const { return hanoi_common::describe(x); }
  [[nodiscard]] std::vector<tools::token> prompt(instance const& x) const { return hanoi_common::prompt(x, equals_); }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    auto const want = static_cast<Derived const&>(*this).solution(x);
    return std::equal(want.begin(), want.end(), out.begin(), out.end());
  }

protected:
  hanoi_task(tools::vocab v, tools::pointer_memory_limits limits) : vocab_(std::move(v)), limits_(limits) {
    for (int r = 0; r < 3; ++r) {
      rods_[static_cast<std::size_t>(r)] = vocab_.id(std::string(1, static_cast<char>('A' + r)));
    }
    dollar_ = vocab_.id("$");
    equals_ = vocab_.id("=");
    ans_ = vocab_.id("[ANS]");
    eos_ = vocab_.id("<EOS>");
  }

  //! Appends the record `(d) X Y $` of move m of tower x.
  void put_move(std::vector<tools::token>& out, instance const& x, hanoi_move const& m) const {
    auto const n = x.disks.size();
    out.push_back(hanoi_common::disk(x.disks[n - static_cast<std::size_t>(m.rank)]));
    out.push_back(rods_[static_cast<std::size_t>(m.from)]);
    out.push_back(rods_[static_cast<std::size_t>(m.to)]);
    out.push_back(dollar_);
  }
  //! A trace writer over a fresh tool, the prompt of x already recorded.
  [[nodiscard]] hanoi_common::writer<Tool> writer_for(instance const& x, std::size_t reserve) const {
    return hanoi_common::writer<Tool>(make_tool(), prompt(x), ans_, reserve);
  }

  tools::vocab vocab_;
  tools::pointer_memory_limits limits_;
  std::array<tools::token, 3> rods_{};  // A B C
  tools::token dollar_ = 0, equals_ = 0, ans_ = 0, eos_ = 0;
};

//! Iterative Tower of Hanoi with one pointer, as specified in docs/tasks.md.
//!
//! A state is `H X1 (d1) , X2 (d2) , .. Xn (dn) , |`, smallest disk first: H is the smallest disk's cycle (`>`
//! for A->B->C->A, `<` for A->C->B->A) and Xk the rod of the k-th smallest disk, in lower case for the disk that
//! moved last and every larger one. Odd moves move the smallest disk along its cycle; even moves move the
//! first disk (from the top) whose rod differs from the one above it, to the third rod. The case marks tell a
//! copy, one entry at a time, whether the move is still ahead, and tell the next step which kind of move it is.
class hanoi_iterative : public hanoi_task<hanoi_iterative, tools::pointer_memory<1>> {
public:
  explicit hanoi_iterative(tools::pointer_memory_limits limits = {}) : hanoi_task(make_vocab(), limits) {
    p_ = hanoi_common::pointer_ids::of(vocab_, 0);
    for (int r = 0; r < 3; ++r) {
      lower_[static_cast<std::size_t>(r)] = vocab_.id(std::string(1, static_cast<char>('a' + r)));
    }
    forward_ = vocab_.id(">");
    backward_ = vocab_.id("<");
    bar_ = vocab_.id("|");
    comma_ = vocab_.id(",");
  }

  //! <PAD>, (1)..(100) (ids 1..100), A B C $ = [ANS] <EOS> [NIL], then a b c > < , | and [p1.*].
  static tools::vocab make_vocab() {
    tools::vocab v;
    hanoi_common::add_common_tokens(v);
    for (auto name : {"a", "b", "c", ">", "<", ",", "|"}) {
      v.add(name);
    }
    for (auto op : {"new", "left", "right", "read"}) {
      v.add(tools::pointer_command_name(1, op));
    }
    return v;
  }

  [[nodiscard]] std::string name() const { return "hanoi_iterative"; }

  //! The output stream of a correct episode: the initial state, then every move's record and the state after
  //! it, computed from the recursive solution (independently of the expert's procedure).
  [[nodiscard]] std::vector<tools::token> solution(instance const& x) const {
    hanoi_common::validate(x);
    auto const n = static_cast<int>(x.disks.size());
    std::vector<int> rod(static_cast<std::size_t>(n), 0);  // by rank - 1
    std::vector<tools::token> out;
    out.reserve(solution_size(n));
    auto const header = n % 2 == 1 ? backward_ : forward_;  // odd n: the smallest disk goes A->C first
    auto const state = [&](int moved) {                     // moved: rank of the disk moved last (n + 1: none)
      out.push_back(header);
      for (int k = 1; k <= n; ++k) {
        auto const r = static_cast<std::size_t>(rod[static_cast<std::size_t>(k - 1)]);
        out.push_back(k >= moved ? lower_[r] : rods_[r]);
        out.push_back(hanoi_common::disk(x.disks[static_cast<std::size_t>(n - k)]));
        out.push_back(comma_);
      }
      out.push_back(bar_);
    };
    state(n + 1);
    for (auto const& m : hanoi_solution(n)) {
      put_move(out, x, m);
      rod[static_cast<std::size_t>(m.rank - 1)] = m.to;
      state(m.rank);
    }
    return out;
  }

  //! The expert episode (docs/tasks.md), written by driving a real tool.
  [[nodiscard]] tools::trace expert(instance const& x) const {
    hanoi_common::validate(x);
    auto const n = static_cast<int>(x.disks.size());
    auto w = writer_for(x, trace_reserve(n));
    auto const rod_of = [&](tools::token t) {
      for (std::size_t r = 0; r < 3; ++r) {
        if (t == rods_[r] || t == lower_[r]) {
          return static_cast<int>(r);
        }
      }
      return -1;
    };
    auto const is_upper = [&](tools::token t) { return std::find(rods_.begin(), rods_.end(), t) != rods_.end(); };
    auto const up = [&](int r) { return rods_[static_cast<std::size_t>(r)]; };
    auto const low = [&](int r) { return lower_[static_cast<std::size_t>(r)]; };

    // 1. Parity pass: two disks at a time from the top; landing on '=' means an even number of disks. The
    // smallest disk cycles A->B->C->A for an even count, A->C->B->A for an odd one: the state header.
    w.cmd(p_.create);
    w.cmd(p_.left);
    w.cmd(p_.left);
    auto t = tools::token{0};
    do {
      w.cmd(p_.right);
      w.cmd(p_.right);
      t = w.read(p_.read);
    } while (hanoi_common::is_disk(t));
    auto const header = t == equals_ ? forward_ : backward_;
    auto const next_rod = [&](int r) { return header == forward_ ? (r + 1) % 3 : (r + 2) % 3; };
    w.store(ans_);
    w.store(header);

    // 2. The initial state: every disk on A, smallest first (the prompt's order); then onto its header.
    w.cmd(p_.create);
    for (auto d = w.read(p_.read); d != equals_; d = w.read(p_.read)) {
      w.store(up(0));
      w.store(d);
      w.store(comma_);
      w.cmd(p_.right);
    }
    w.store(bar_);
    w.cmd(p_.right);
    w.cmd(p_.right);
    w.read(p_.read);

    // 3. Moves. The pointer stands on the current state's header, just read.
    while (true) {
      w.cmd(p_.right);
      auto const x1 = w.read(p_.read);
      if (is_upper(x1)) {
        // Odd move: the smallest disk, along its cycle. The record's rods are read again right before they are
        // written, so no rod is decided by looking past a disk.
        w.cmd(p_.right);
        w.store(w.read(p_.read));
        w.cmd(p_.left);
        auto const from = rod_of(w.read(p_.read));
        w.store(up(from));
        w.cmd(p_.left);
        w.read(p_.read);  // the header
        w.store(up(next_rod(from)));
        w.store(dollar_);
      } else {
        // Even move: the first disk whose rod differs from the one above it; none: the tower is on C.
        auto above = x1;
        while (true) {
          w.cmd(p_.right);
          w.cmd(p_.right);
          w.cmd(p_.right);
          auto const xk = w.read(p_.read);
          if (xk == bar_) {
            w.end(eos_);
            return std::move(w.t);
          }
          if (rod_of(xk) != rod_of(above)) {
            break;
          }
          above = xk;
        }
        w.cmd(p_.right);
        w.store(w.read(p_.read));
        w.cmd(p_.left);
        auto const from = rod_of(w.read(p_.read));
        w.store(up(from));
        w.cmd(p_.left);
        w.cmd(p_.left);
        w.cmd(p_.left);
        auto const other = rod_of(w.read(p_.read));  // the rod above, where the smaller disks are
        w.store(up(3 - from - other));
        w.store(dollar_);
        // Back to the header over the separators only: one step, then three at a time.
        w.cmd(p_.left);
        while (w.read(p_.read) != header) {
          w.cmd(p_.left);
          w.cmd(p_.left);
          w.cmd(p_.left);
        }
      }
      // Copy the state entry by entry with the move applied. A separator is written right after each disk, so
      // that the next rod's decision sees the separator, not the disk, as its latest token.
      w.store(header);
      w.cmd(p_.right);
      auto written = tools::token{0};
      for (bool first = true;; first = false) {
        auto const xk = w.read(p_.read);
        if (xk == bar_) {
          w.store(bar_);
          break;
        }
        auto const r = rod_of(xk);
        tools::token out = 0;
        if (first) {
          out = is_upper(xk) ? low(next_rod(r)) : up(r);  // an odd move changes the first entry
        } else if (!is_upper(written)) {
          out = low(r);  // past the moved disk
        } else if (r != rod_of(written)) {
          out = low(3 - r - rod_of(written));  // the moved disk: to the third rod
        } else {
          out = up(r);
        }
        w.store(out);
        written = out;
        w.cmd(p_.right);
        w.store(w.read(p_.read));
        w.store(comma_);
        w.cmd(p_.right);
        w.cmd(p_.right);
      }
      // Skip the move record to the new state's header.
      for (int i = 0; i < 5; ++i) {
        w.cmd(p_.right);
      }
      w.read(p_.read);
    }
  }

private:
  static std::size_t solution_size(int n) {
    auto const moves = (std::size_t{1} << n) - 1;
    return (moves + 1) * (3 * static_cast<std::size_t>(n) + 2) + 4 * moves;
  }
  static std::size_t trace_reserve(int n) {
    auto const moves = (std::size_t{1} << n) - 1;
    return moves * (11 * static_cast<std::size_t>(n) + 40) + 16 * static_cast<std::size_t>(n) + 64;
  }

  hanoi_common::pointer_ids p_{};
  std::array<tools::token, 3> lower_{};  // a b c
  tools::token forward_ = 0, backward_ = 0, bar_ = 0, comma_ = 0;
};

//! Recursive Tower of Hanoi with two pointers, as specified in docs/tasks.md.
//!
//! Lists L1, L2, .. are written in turn, each ended by `#`: Li is L(i-1) with B and C swapped, then
//! `(di) A C $`, then L(i-1) with A and B swapped (L1 = `(d1) A C $`). p1 stands on disk i, p2 walks L(i-1).
//! The second copy marks every read with a step of p1 out and back, so the swap of each written rod is told
//! by the few tokens before it. The answer is Ln, then `#`.
class hanoi_recursive : public hanoi_task<hanoi_recursive, tools::pointer_memory<2>> {
public:
  explicit hanoi_recursive(tools::pointer_memory_limits limits = {}) : hanoi_task(make_vocab(), limits) {
    p1_ = hanoi_common::pointer_ids::of(vocab_, 0);
    p2_ = hanoi_common::pointer_ids::of(vocab_, 1);
    hash_ = vocab_.id("#");
  }

  //! <PAD>, (1)..(100) (ids 1..100), A B C $ = [ANS] <EOS> [NIL], then # and [p1.*] [p2.*].
  static tools::vocab make_vocab() {
    tools::vocab v;
    hanoi_common::add_common_tokens(v);
    v.add("#");
    for (int k = 1; k <= 2; ++k) {
      for (auto op : {"new", "left", "right", "read"}) {
        v.add(tools::pointer_command_name(k, op));
      }
    }
    return v;
  }

  [[nodiscard]] std::string name() const { return "hanoi_recursive"; }

  //! The output stream of a correct episode: every move of the solution as `(d) X Y $`, then `#`.
  [[nodiscard]] std::vector<tools::token> solution(instance const& x) const {
    hanoi_common::validate(x);
    auto const n = static_cast<int>(x.disks.size());
    std::vector<tools::token> out;
    out.reserve(4 * ((std::size_t{1} << n) - 1) + 1);
    for (auto const& m : hanoi_solution(n)) {
      put_move(out, x, m);
    }
    out.push_back(hash_);
    return out;
  }

  //! The expert episode (docs/tasks.md), written by driving a real tool.
  [[nodiscard]] tools::trace expert(instance const& x) const {
    hanoi_common::validate(x);
    auto const n = static_cast<int>(x.disks.size());
    auto const moves = (std::size_t{1} << n) - 1;
    auto w = writer_for(x, 48 * moves + 64 * static_cast<std::size_t>(n));
    auto const a = rods_[0], b = rods_[1], c = rods_[2];
    auto const swap_bc = [&](tools::token t) { return t == b ? c : t == c ? b : t; };
    auto const swap_ab = [&](tools::token t) { return t == a ? b : t == b ? a : t; };

    // p1 walks to '=' with p2 alongside (p2 stays there, just before the empty list L0); then p1 restarts just
    // before the top (smallest) disk. p2 only ever reads a disk to copy it.
    w.cmd(p1_.create);
    w.cmd(p2_.create);
    while (w.read(p1_.read) != equals_) {
      w.cmd(p1_.right);
      w.cmd(p2_.right);
    }
    w.cmd(p1_.create);
    w.cmd(p1_.left);
    while (true) {
      // End the previous list, then look two disks ahead: '#' (past '=') means every list is written; '='
      // means the next disk is the largest, so the next list is the answer.
      w.store(hash_);
      w.cmd(p1_.right);
      w.cmd(p1_.right);
      auto const ahead = w.read(p1_.read);
      if (ahead == hash_) {
        w.end(eos_);
        return std::move(w.t);
      }
      w.cmd(p1_.left);  // p1 on disk i
      if (ahead == equals_) {
        w.store(ans_);
      }
      // L(i-1) with B and C swapped (disks 1..i-1 from A to B): step, read, write.
      while (true) {
        w.cmd(p2_.right);
        auto const t = w.read(p2_.read);
        if (t == hash_) {
          break;
        }
        w.store(swap_bc(t));
      }
      // Disk i from A to C.
      w.store(w.read(p1_.read));
      w.store(a);
      w.store(c);
      w.store(dollar_);
      // p2 back before L(i-1), reading only the move ends ('$', then '#' or '=' before the list).
      w.cmd(p2_.left);
      while (true) {
        auto const t = w.read(p2_.read);
        if (t == hash_ || t == equals_) {
          break;
        }
        for (int i = 0; i < 4; ++i) {
          w.cmd(p2_.left);
        }
      }
      // L(i-1) with A and B swapped (disks 1..i-1 from B to C). Before each read p1 steps out and back: that
      // mark, right before every token this copy writes, tells its swap from the first copy's. p2 ends on the
      // '#' before Li.
      while (true) {
        w.cmd(p2_.right);
        w.cmd(p1_.left);
        w.cmd(p1_.right);
        auto const t = w.read(p2_.read);
        if (t == hash_) {
          break;
        }
        w.store(swap_ab(t));
      }
    }
  }

private:
  hanoi_common::pointer_ids p1_{}, p2_{};
  tools::token hash_ = 0;
};

static_assert(task_env<hanoi_iterative>);
static_assert(task_env<hanoi_recursive>);

}  // namespace ssmlen::tasks
