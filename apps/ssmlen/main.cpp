// The ssmlen command line. Each subcommand lives in its own cmd_<name>.hpp and
// registers itself on the CLI11 app here.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cmd_eval.hpp"
#include "cmd_logits.hpp"
#include "cmd_trace.hpp"
#include "cmd_train.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ssmlen: tool-augmented state space models that length-generalize"};
  app.require_subcommand(1);
  ssmlen::apps::add_logits_command(app);
  ssmlen::apps::add_trace_command(app);
  ssmlen::apps::add_train_command(app);
  ssmlen::apps::add_eval_command(app);
  try {
    app.parse(argc, argv);
  } catch (CLI::ParseError const& e) {
    return app.exit(e);
  } catch (std::exception const& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
