// The benchmark's own models, made with LibTorch's TorchScript compiler so that the benchmark
// needs no Python. Same architectures as scripts/make_models.py's "tiny", "demo" and "mlp".
#pragma once

#include <string>

namespace sidecar::bench {

// Linear(64 -> 10); input 1x64 float32.
void save_tiny_model(const std::string& path);
// Conv2d(3, 64, 3) -> mean over H, W -> Linear(64 -> 10); input 1x3x224x224 float32.
void save_demo_model(const std::string& path);
// Linear(1024 -> 4096) -> ReLU -> Linear(4096 -> 1024) -> ReLU -> Linear(1024 -> 10); input
// 1x1024 float32. Its weights dominate a forward's cost, so batching pays on it.
void save_mlp_model(const std::string& path);

}  // namespace sidecar::bench
