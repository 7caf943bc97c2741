// SPDX-License-Identifier: Apache-2.0
//! @file task_env.hpp
//! The task concept: a generator of problem instances of size n (digits, disks
//! or nodes), their prompts, expert traces and exact-match checks, plus the
//! tool the model uses to solve them.
#pragma once

#include <ssmlen/core/rng.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <concepts>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::tasks {

template <class E>
concept task_env = requires(E const& e, rng& g, int n, typename E::instance const& x,
                            std::span<const tools::token> out) {
  typename E::instance;
  typename E::tool_type;
  requires tools::tool<typename E::tool_type>;
  { e.name() } -> std::convertible_to<std::string>;
  { e.vocab() } -> std::convertible_to<tools::vocab const&>;
  { e.sample(g, n) } -> std::same_as<typename E::instance>;        // the training distribution up to size n
  { e.sample_exact(g, n) } -> std::same_as<typename E::instance>;  // the test distribution at exactly size n
  { e.prompt(x) } -> std::convertible_to<std::vector<tools::token>>;
  { e.expert(x) } -> std::convertible_to<tools::trace>;  // the whole episode: prompt (input) then model and tool tokens
  { e.check(x, out) } -> std::convertible_to<bool>;      // out: the output stream (output tokens before <EOS>)
  { e.make_tool() } -> std::same_as<typename E::tool_type>;
};

}  // namespace ssmlen::tasks
