// SPDX-License-Identifier: Apache-2.0
//! @file any_task.hpp
//! Type erasure for tasks and tools, so the command line, the trainer and the
//! evaluator pick a task by name at run time. Library code stays generic over
//! `task_env` and `tool`; these wrappers cost one virtual call per token or per
//! sampled instance, which is nothing next to a model step.
#pragma once

#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <nlohmann/json.hpp>

#include <concepts>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssmlen::tasks {

//! Any tools::tool behind one interface; itself a tools::tool. Move-only.
class any_tool {
public:
  template <tools::tool T>
    requires(!std::same_as<std::remove_cvref_t<T>, any_tool>)
  explicit any_tool(T t) : self_(std::make_unique<model<T>>(std::move(t))) {}

  void reset(std::span<const tools::token> prompt) { self_->reset(prompt); }
  tools::tool_reply feed(tools::token t) { return self_->feed(t); }

private:
  struct concept_base {
    virtual ~concept_base() = default;
    virtual void reset(std::span<const tools::token> prompt) = 0;
    virtual tools::tool_reply feed(tools::token t) = 0;
  };
  template <class T>
  struct model final : concept_base {
    explicit model(T t) : tool(std::move(t)) {}
    void reset(std::span<const tools::token> prompt) override { tool.reset(prompt); }
    tools::tool_reply feed(tools::token t) override { return tool.feed(t); }
    T tool;
  };
  std::unique_ptr<concept_base> self_;
};

//! One sampled instance, with everything a trainer or evaluator needs.
struct episode_spec {
  std::vector<tools::token> prompt;
  tools::trace expert;                                       // full expert episode (prompt included, role input)
  std::function<bool(std::span<const tools::token>)> check;  // exact match of an output stream
  nlohmann::json describe;                                   // the instance for humans and JSON files
};

//! Optional task members that any_task uses when present.
template <class E>
concept describable_task = requires(E const& e, typename E::instance const& x) {
  { e.describe(x) } -> std::convertible_to<nlohmann::json>;
};
template <class E>
concept task_from_operands = requires(E const& e, std::string_view a, std::string_view b) {
  { e.instance_from_strings(a, b) } -> std::same_as<typename E::instance>;
};

//! Any task_env behind one interface. Copies share the (immutable) task.
class any_task {
public:
  template <task_env E>
    requires(!std::same_as<std::remove_cvref_t<E>, any_task>)
  explicit any_task(E env) : self_(std::make_shared<model<E>>(std::move(env))) {}

  [[nodiscard]] std::string name() const { return self_->name(); }
  [[nodiscard]] tools::vocab const& vocab() const { return self_->vocab(); }
  //! `<EOS>` and `[ANS]` of this task's vocabulary, for agent::run_episode.
  [[nodiscard]] agent::episode_markers markers() const { return agent::episode_markers::from(vocab()); }
  //! An instance of the training distribution, up to size n.
  [[nodiscard]] episode_spec sample(rng& g, int n) const { return self_->sample(g, n, false); }
  //! An instance of the test distribution, at exactly size n.
  [[nodiscard]] episode_spec sample_exact(rng& g, int n) const { return self_->sample(g, n, true); }
  //! Whether from_operands() works for this task (the addition family).
  [[nodiscard]] bool has_operands() const { return self_->has_operands(); }
  //! The instance with the given operands (decimal digit strings); throws for tasks without operands.
  [[nodiscard]] episode_spec from_operands(std::string_view a, std::string_view b) const {
    return self_->from_operands(a, b);
  }
  [[nodiscard]] any_tool make_tool() const { return self_->make_tool(); }

private:
  struct concept_base {
    virtual ~concept_base() = default;
    [[nodiscard]] virtual std::string name() const = 0;
    [[nodiscard]] virtual tools::vocab const& vocab() const = 0;
    [[nodiscard]] virtual episode_spec sample(rng& g, int n, bool exact) const = 0;
    [[nodiscard]] virtual bool has_operands() const = 0;
    [[nodiscard]] virtual episode_spec from_operands(std::string_view a, std::string_view b) const = 0;
    [[nodiscard]] virtual any_tool make_tool() const = 0;
  };

  template <class E>
  struct model final : concept_base, std::enable_shared_from_this<model<E>> {
    explicit model(E e) : env(std::move(e)) {}
    [[nodiscard]] std::string name() const override { return std::string(env.name()); }
    [[nodiscard]] tools::vocab const& vocab() const override { return env.vocab(); }
    [[nodiscard]] episode_spec sample(rng& g, int n, bool exact) const override {
      return spec(exact ? env.sample_exact(g, n) : env.sample(g, n));
    }
    [[nodiscard]] bool has_operands() const override { return task_from_operands<E>; }
    [[nodiscard]] episode_spec from_operands(std::string_view a, std::string_view b) const override {
      if constexpr (task_from_operands<E>) {
        return spec(env.instance_from_strings(a, b));
      } else {
        (void)a;
        (void)b;
        throw error("task '" + name() + "' does not take operands");
      }
    }
    [[nodiscard]] any_tool make_tool() const override { return any_tool(env.make_tool()); }

    episode_spec spec(typename E::instance x) const {
      episode_spec s;
      s.prompt = env.prompt(x);
      s.expert = env.expert(x);
      if constexpr (describable_task<E>) {
        s.describe = env.describe(x);
      }
      // The check keeps the task alive: a spec may outlive the any_task it came from.
      s.check = [self = this->shared_from_this(), x = std::move(x)](std::span<const tools::token> out) {
        return static_cast<bool>(self->env.check(x, out));
      };
      return s;
    }

    E env;
  };

  std::shared_ptr<const concept_base> self_;
};

//! Runs one episode of `spec` with a fresh tool of `task`; `solved` is exact match after <EOS>.
template <agent::policy P>
agent::episode_result run_task_episode(P& p, any_task const& task, episode_spec const& spec, std::int64_t max_tokens) {
  auto tool = task.make_tool();
  return agent::run_episode(p, tool, spec.prompt, task.markers(), max_tokens);
}

//! Whether an episode ended with <EOS> and its output stream passes the instance's check.
inline bool solved(agent::episode_result const& r, episode_spec const& spec) {
  return r.finished() && spec.check(r.output);
}

}  // namespace ssmlen::tasks
