// sidecar-grpc-server: the model behind a synchronous gRPC C++ server, the kind of model server a
// user would otherwise run, to measure the sidecar against. The same frozen model (or --echo: the
// inputs as the answer); tensors travel as bytes (model_service.proto). Listens on TCP loopback and
// on a Unix socket at once; prints "listening on HOST:PORT" once it serves.
//
//   sidecar-grpc-server --tcp 127.0.0.1:0 --unix /tmp/x.sock --model tiny.pt --shape 1x64
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "model_runner.hpp"
#include "model_service.grpc.pb.h"
#include "served_model.hpp"

namespace {

using namespace sidecar;

// The outputs, each appended to the reply as it would be by a server answering with bytes.
class ReplySink final : public OutputSink {
 public:
  explicit ReplySink(bench::Tensors& reply) : reply_(reply) {}
  Status accept(std::span<const OutputView> outputs, std::string&) override {
    for (const OutputView& output : outputs) reply_.add_tensors(static_cast<const char*>(output.data), output.bytes);
    return Status::kOk;
  }

 private:
  bench::Tensors& reply_;
};

class ModelService final : public bench::ModelService::Service {
 public:
  ModelService(ModelRunner& runner, InputSignature signature) : runner_(runner), signature_(std::move(signature)) {
    for (const TensorShape& shape : signature_) {
      std::uint64_t bytes = 0;
      shape_byte_size(shape, bytes);
      sizes_.push_back(bytes);
    }
  }

  grpc::Status Infer(grpc::ServerContext*, const bench::Tensors* request, bench::Tensors* reply) override {
    // gRPC hands requests to threads of its own: each is prepared and warmed, as the sidecar's
    // workers are, before its first forward.
    thread_local bool warmed = false;
    if (!warmed) {
      runner_.prepare_worker_thread();
      runner_.warm_up({signature_}, 20);
      warmed = true;
    }
    if (static_cast<std::size_t>(request->tensors_size()) != signature_.size()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "expected " + std::to_string(signature_.size()) + " tensors"};
    }
    InputView inputs[kMaxTensors];
    for (std::size_t i = 0; i < signature_.size(); ++i) {
      const std::string& bytes = request->tensors(static_cast<int>(i));
      if (bytes.size() != sizes_[i]) {
        return {grpc::StatusCode::INVALID_ARGUMENT, "tensor " + std::to_string(i) + " has the wrong size"};
      }
      // The request is this call's own: the model may read it in place.
      inputs[i] = InputView{signature_[i], const_cast<char*>(bytes.data())};
    }
    ReplySink sink(*reply);
    const CallOutcome outcome = runner_.run(std::span<const InputView>(inputs, signature_.size()), sink);
    if (outcome.status != Status::kOk) return {grpc::StatusCode::INTERNAL, outcome.message};
    return grpc::Status::OK;
  }

 private:
  ModelRunner& runner_;
  InputSignature signature_;
  std::vector<std::uint64_t> sizes_;
};

int serve(const std::string& tcp, const std::string& unix_path, std::unique_ptr<ModelRunner> runner,
          const InputSignature& signature) {
  ModelService service(*runner, signature);
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  builder.AddListeningPort(tcp, grpc::InsecureServerCredentials(), &tcp_port);
  if (!unix_path.empty()) builder.AddListeningPort("unix:" + unix_path, grpc::InsecureServerCredentials());
  // A demo-sized input is 602 KB; a user's model may take more than gRPC's default 4 MB.
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  // gRPC's sync server retires a polling thread once more than MAX_POLLERS are idle, and the next
  // burst starts a new one, cold (each thread warms the model on its first call, as TorchScript
  // keeps its warmed state per thread): keep the threads it has made.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 64);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || tcp_port == 0) {
    std::fprintf(stderr, "cannot listen on %s%s\n", tcp.c_str(), unix_path.empty() ? "" : (" and " + unix_path).c_str());
    return 1;
  }
  const std::string host = tcp.substr(0, tcp.rfind(':'));
  std::fprintf(stderr, "listening on %s:%d\n", host.c_str(), tcp_port);
  server->Wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tcp = "127.0.0.1:0", unix_path;
  sidecar::bench::ServedModelFlags served;
  CLI::App app{"sidecar-grpc-server: the model behind a synchronous gRPC server, for sidecar-bench"};
  app.add_option("--tcp", tcp, "HOST:PORT to listen on (port 0: any free one, printed)")->capture_default_str();
  app.add_option("--unix", unix_path, "also listen on this Unix socket");
  sidecar::bench::add_served_model_flags(app, served);
  CLI11_PARSE(app, argc, argv);
  return sidecar::bench::run_peer_server("sidecar-grpc-server", served, [&](const sidecar::InputSignature& signature) {
    return serve(tcp, unix_path, sidecar::bench::load_served_model(served, signature), signature);
  });
}
