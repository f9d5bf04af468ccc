#include "served_model.hpp"

#include <cstdio>
#include <exception>

#include "echo_runner.hpp"
#include "options.hpp"

namespace sidecar::bench {

void add_served_model_flags(CLI::App& app, ServedModelFlags& flags) {
  auto* model = app.add_option("--model", flags.model_path, "TorchScript file");
  app.add_flag("--echo", flags.echo, "serve no model: answer each request with its inputs")->excludes(model);
  app.add_option("--shape", flags.shape, "input signature, e.g. 1x64 or 1x8:int64,1x8")->required();
}

std::unique_ptr<ModelRunner> load_served_model(const ServedModelFlags& flags, const InputSignature& signature) {
  configure_torch_threads(1, 1);
  retain_freed_memory();
  std::unique_ptr<ModelRunner> runner =
      flags.echo ? make_echo_runner(signature.size()) : ModelRunner::load(flags.model_path, {});
  runner->prepare_worker_thread();
  runner->warm_up({signature}, 20);
  return runner;
}

int run_peer_server(const char* program, const ServedModelFlags& flags,
                    const std::function<int(const InputSignature&)>& serve) {
  if (!flags.echo && flags.model_path.empty()) {
    std::fprintf(stderr, "%s: --model or --echo is required\n", program);
    return 1;
  }
  try {
    return serve(parse_signature(flags.shape));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: %s\n", program, error.what());
    return 1;
  }
}

}  // namespace sidecar::bench
