// The subcommands of the crisp program; each returns the process's exit status.
#pragma once

#include <string>
#include <vector>

namespace crisp::cli {

int train_command(const std::vector<std::string>& argv);
int eval_command(const std::vector<std::string>& argv);
int ckpt_command(const std::vector<std::string>& argv);
int bench_command(const std::vector<std::string>& argv);

}  // namespace crisp::cli
