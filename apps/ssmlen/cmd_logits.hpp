// `ssmlen logits --checkpoint FILE --tokens "3 1 4 1 5"`: the logits of every
// position as JSON, for checking a checkpoint against another implementation.
#pragma once

#include <ssmlen/models/checkpoint.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace ssmlen::apps {

inline std::vector<std::int32_t> parse_token_list(std::string const& text) {
  std::vector<std::int32_t> out;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long v = 0;
    try {
      v = std::stol(word, &used);
    } catch (std::exception const&) {
      used = 0;
    }
    check_arg(used == word.size() && v >= 0 && v <= 0x7fffffff, "--tokens entry", "\"" + word + "\"",
              "must be a non-negative integer token id");
    out.push_back(static_cast<std::int32_t>(v));
  }
  check(!out.empty(), "--tokens: give at least one token id, e.g. --tokens \"3 1 4 1 5\"");
  return out;
}

inline void add_logits_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Print the logits of every position of a token sequence as JSON");
  auto checkpoint = std::make_shared<std::string>();
  auto tokens = std::make_shared<std::string>();
  cmd->add_option("--checkpoint", *checkpoint, "Model checkpoint (.safetensors)")->required();
  cmd->add_option("--tokens", *tokens, "Token ids separated by spaces, e.g. \"3 1 4 1 5\"")->required();
  cmd->callback([checkpoint, tokens] {
    auto const ids = parse_token_list(*tokens);
    auto const model = models::load_model<float>(*checkpoint);
    std::int64_t const v = model.config().vocab;
    std::vector<float> logits(ids.size() * static_cast<std::size_t>(v));
    models::mamba_lm<float>::cache k;
    model.forward(backends::host{}, ids, sequences::uniform(1, static_cast<std::int64_t>(ids.size())), logits.data(),
                  k);
    nlohmann::json rows = nlohmann::json::array();
    for (std::size_t t = 0; t < ids.size(); ++t) {
      rows.push_back(std::vector<float>(logits.begin() + static_cast<std::ptrdiff_t>(t * v),
                                        logits.begin() + static_cast<std::ptrdiff_t>((t + 1) * v)));
    }
    nlohmann::json const out{{"checkpoint", *checkpoint}, {"tokens", ids}, {"vocab", v}, {"logits", rows}};
    std::printf("%s\n", out.dump().c_str());
  });
}

}  // namespace ssmlen::apps
