// Copyright 2026 The cbloss Authors.
//
// `cbloss health`: exit 0 if the server's overall health is SERVING.

#include <iostream>

#include "command.h"

namespace cbloss::cli {

void AddHealthCommand(CLI::App* app, Handler* chosen) {
  CLI::App* health =
      app->add_subcommand("health", "exit 0 if the server is SERVING");
  health->callback([chosen] {
    *chosen = [](const Context& context) {
      const absl::Status s = context.client->CheckHealth();
      const char* status = s.ok() ? "SERVING" : "NOT_SERVING";
      if (context.json) {
        PrintJson(json{{"status", status}});
      } else {
        std::cout << status << "\n";
      }
      return s.ok() ? 0 : Fail(s);
    };
  });
}

}  // namespace cbloss::cli
