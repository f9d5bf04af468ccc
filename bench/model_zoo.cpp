#include "model_zoo.hpp"

#include <torch/script.h>
#include <torch/torch.h>

namespace sidecar::bench {

void save_tiny_model(const std::string& path) {
  torch::manual_seed(0);
  torch::jit::Module module("Tiny");
  module.register_parameter("weight", torch::randn({10, 64}) * 0.1, false);
  module.register_parameter("bias", torch::randn({10}) * 0.1, false);
  module.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  module.save(path);
}

void save_demo_model(const std::string& path) {
  torch::manual_seed(0);
  torch::jit::Module module("DemoCNN");
  module.register_parameter("conv_weight", torch::randn({64, 3, 3, 3}) * 0.1, false);
  module.register_parameter("conv_bias", torch::randn({64}) * 0.1, false);
  module.register_parameter("fc_weight", torch::randn({10, 64}) * 0.1, false);
  module.register_parameter("fc_bias", torch::randn({10}) * 0.1, false);
  module.define(R"(
def forward(self, x):
    features = torch.conv2d(x, self.conv_weight, self.conv_bias)
    return torch.linear(features.mean(dim=[2, 3]), self.fc_weight, self.fc_bias)
)");
  module.save(path);
}

}  // namespace sidecar::bench
