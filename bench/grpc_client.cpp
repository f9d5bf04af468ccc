// The gRPC peer's client side, built only with gRPC.
#include <grpcpp/grpcpp.h>

#include <stdexcept>

#include "model_service.grpc.pb.h"
#include "peers.hpp"

namespace sidecar::bench {
namespace {

// A synchronous stub, as a client of a model server would use: the inputs copied into the request
// as bytes each call, the outputs parsed out of the reply.
class GrpcConnection final : public PeerConnection {
 public:
  explicit GrpcConnection(const std::string& target) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    stub_ = ModelService::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments));
  }

  void call(const ClientInputs& inputs) override {
    request_.clear_tensors();
    for (const auto& values : inputs.values) {
      request_.add_tensors(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    }
    grpc::ClientContext context;
    const grpc::Status status = stub_->Infer(&context, request_, &reply_);
    if (!status.ok()) throw std::runtime_error("grpc: " + status.error_message());
    if (reply_.tensors_size() == 0) throw std::runtime_error("grpc: an answer without outputs");
  }

 private:
  std::unique_ptr<ModelService::Stub> stub_;
  Tensors request_;
  Tensors reply_;
};

}  // namespace

bool grpc_peer_built() { return true; }

std::unique_ptr<PeerConnection> connect_grpc(const std::string& target) {
  return std::make_unique<GrpcConnection>(target);
}

}  // namespace sidecar::bench
