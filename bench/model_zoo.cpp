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

void save_mlp_model(const std::string& path) {
  torch::manual_seed(0);
  torch::jit::Module module("MLP");
  // Scaled like nn.Linear's default initialisation (1/sqrt(inputs)), so activations stay O(1).
  module.register_parameter("weight1", torch::randn({4096, 1024}) * 0.03, false);
  module.register_parameter("bias1", torch::randn({4096}) * 0.03, false);
  module.register_parameter("weight2", torch::randn({1024, 4096}) * 0.015, false);
  module.register_parameter("bias2", torch::randn({1024}) * 0.015, false);
  module.register_parameter("weight3", torch::randn({10, 1024}) * 0.03, false);
  module.register_parameter("bias3", torch::randn({10}) * 0.03, false);
  module.define(R"(
def forward(self, x):
    hidden = torch.relu(torch.linear(x, self.weight1, self.bias1))
    hidden = torch.relu(torch.linear(hidden, self.weight2, self.bias2))
    return torch.linear(hidden, self.weight3, self.bias3)
)");
  module.save(path);
}

}  // namespace sidecar::bench
