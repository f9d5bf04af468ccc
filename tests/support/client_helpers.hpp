// Test support: what every client-side test needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <chrono>
#include <vector>

#include "sidecar/client.hpp"

namespace sidecar::testing {

// The tiny model's input (scripts/make_models.py "tiny").
constexpr std::int64_t kTinyShape[] = {1, 64};

// The demo CNN's input (scripts/make_models.py "demo").
constexpr std::int64_t kImageShape[] = {1, 3, 224, 224};
constexpr std::size_t kImageElements = 3 * 224 * 224;

// Test input: `count` values `scale` apart, wrapping every 97 so they stay small.
inline std::vector<float> ramp(std::size_t count, float scale) {
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i) values[i] = scale * static_cast<float>(i % 97) - 1.0f;
  return values;
}

// Options with this connect timeout and spin budget, the rest left at their defaults.
inline ConnectOptions connect_options(std::chrono::milliseconds timeout,
                                      std::chrono::microseconds spin = std::chrono::microseconds(50)) {
  ConnectOptions options;
  options.timeout = timeout;
  options.spin = spin;
  return options;
}

// Polls until `done()` or a hang guard runs out; false then. Not a timing assertion: callers assert
// on what they counted, the guard only keeps a broken run from hanging.
template <typename Done>
bool wait_until(Done&& done, std::chrono::seconds guard = std::chrono::seconds(60)) {
  const auto give_up = std::chrono::steady_clock::now() + guard;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A test that cannot connect has nothing to test: throw, and the test fails with the reason.
inline Client connect_or_fail(const std::string& name, ConnectOptions options = {}) {
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error(client.message());
  return std::move(client).value();
}

// Uniform values in [low, 1), the same for the same seed.
inline std::vector<float> random_values(std::size_t count, std::uint32_t seed, float low = -1.0f) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(low, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = value(random);
  return values;
}

}  // namespace sidecar::testing
