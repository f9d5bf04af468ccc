// The client library: connect to a sidecar on this host by name and run its model through shared
// memory. Links no LibTorch.
//
// connect() finds the sidecar's Unix socket from its name, checks that the process behind it runs
// as the user who owns its runtime directory, and receives this client's own channel (rings and
// tensor arena, a sealed memfd no other process holds) with the sidecar's status page and result
// cache (read-only). After a sidecar restart the next call reconnects by itself.
//
//   auto client = sidecar::Client::connect("resnet", {});
//   if (!client.ok()) { std::cerr << client.message() << "\n"; return 1; }
//   std::vector<float> pixels(1 * 3 * 224 * 224);
//   const std::int64_t shape[] = {1, 3, 224, 224};
//   auto outputs = client->infer(sidecar::TensorView::of(pixels, shape), std::chrono::seconds(1));
//
// A Client owns one channel of the sidecar and is not thread-safe: give each thread its own. A
// forked child cannot use its parent's Client (calls answer kInvalidArgument; connect anew).
// Calls never throw (except std::bad_alloc); failures come back as an ErrorCode and a message.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/export.h"
#include "sidecar/shared/error.hpp"
#include "sidecar/tensor.hpp"

namespace sidecar {

// Where requests are looked up in the sidecar's result cache (when it has one).
enum class CacheLookup {
  kInClient,   // here, in a read-only mapping of the cache: a hit costs no round trip and wakes nobody
  kInSidecar,  // by the sidecar, when the request arrives
  kOff,        // never: every request runs the model and nothing is stored
};

// Per call: kBypass neither looks the inputs up nor stores the result.
enum class CachePolicy { kUse, kBypass };

// What the cache did for the last call.
enum class CacheOutcome { kNotUsed, kMiss, kHitInClient, kHitInSidecar };
SIDECAR_API const char* cache_outcome_name(CacheOutcome outcome) noexcept;

// How the sidecar served the last call that reached it (zeros for a hit found in this client).
struct ServiceInfo {
  std::uint32_t batch_size = 0;     // requests in the forward that answered it; 0 when none ran
  std::uint64_t service_order = 0;  // the order in which the sidecar took it, across all clients
};

// The sidecar's cache statistics, read from its status page.
struct CacheStats {
  bool enabled = false;  // false: the sidecar runs without a cache (--cache-bytes 0)
  std::uint64_t budget_bytes = 0;
  std::uint64_t bytes_used = 0;  // metadata included; never above budget_bytes
  std::uint64_t entries = 0;
  std::uint64_t client_hits = 0;  // found by clients themselves (reported every ~100 ms)
  std::uint64_t sidecar_hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t inserts = 0;
  std::uint64_t evictions = 0;
  std::uint64_t too_large = 0;  // results not cached: entry over the size cap
  std::uint64_t flushes = 0;
  std::uint64_t generation = 0;
  std::uint64_t max_entry_bytes = 0;
  std::uint64_t hits() const noexcept { return client_hits + sidecar_hits; }
  double hit_ratio() const noexcept {
    const std::uint64_t lookups = hits() + misses;
    return lookups ? static_cast<double>(hits()) / static_cast<double>(lookups) : 0.0;
  }
};


// A request submitted and not yet collected with wait() or try_get().
struct RequestHandle {
  std::uint64_t id = 0;
};

struct SubmitOptions {
  // The request's deadline, from now: the sidecar answers "deadline exceeded" without running it
  // once it has passed; wait() uses its own timeout.
  std::chrono::microseconds timeout{std::chrono::seconds(5)};
  CachePolicy cache = CachePolicy::kUse;
};

struct ConnectOptions {
  // How long connect() waits for the sidecar to exist and be ready.
  std::chrono::milliseconds timeout{5000};
  // The longest a call polls for its answer before it sleeps (waking costs tens of microseconds;
  // polling burns a core). It polls less when answers have lately come later than this, and not
  // at all when its request had to wake a sleeping sidecar.
  std::chrono::microseconds spin{50};
  CacheLookup cache_lookup = CacheLookup::kInClient;
  // Where the sidecar's socket is; empty: $INFERENCE_SIDECAR_RUNTIME_DIR, else
  // /run/inference-sidecar, else $XDG_RUNTIME_DIR/inference-sidecar (the first holding NAME.sock).
  std::string runtime_dir;
  // The uid the sidecar must run as; empty: the owner of the runtime directory. A process behind
  // the socket that runs as anyone else is refused (kUntrusted) before anything is sent to it.
  std::optional<std::uint32_t> sidecar_uid;
  // Bytes of shared memory for tensors; 0: the sidecar's --arena-bytes. At most its --max-arena-bytes.
  std::uint64_t arena_bytes = 0;
  // After the sidecar restarts, the next call connects anew (waiting at most the smaller of
  // `timeout` and the call's own timeout). Requests in flight when it went answer kSidecarGone.
  bool reconnect = true;
};

// What the sidecar serves, read from its status page at connect time (and at each reconnect).
struct ModelInfo {
  std::string model_path;
  std::size_t input_count = 0;
  std::size_t output_count = 0;
  // > 1: a signature whose inputs have a leading dim of 1 also takes 2..max_batch rows, and the
  // sidecar batches such requests.
  std::uint32_t max_batch = 1;
  // Each accepted set of input shapes. Empty when the sidecar accepts any shape.
  struct Signature {
    // Each input's dtype and, per dim, the smallest size accepted.
    std::vector<std::pair<DType, std::vector<std::int64_t>>> inputs;
    // Per input and dim, the largest size accepted: equal to the smallest for a fixed dim,
    // kAnySize for a dim of any size (`?`).
    std::vector<std::vector<std::int64_t>> input_largest;
    // The output shapes the model gave at warm-up on the largest request accepted (for a fixed
    // signature, its only one); empty when a dim has no largest size.
    std::vector<std::pair<DType, std::vector<std::int64_t>>> outputs;
    std::string text;  // "[1, 1..512] int64", as --accept-shape's ranges
  };
  static constexpr std::int64_t kAnySize = -1;
  std::vector<Signature> signatures;
  // The input shapes every worker was warmed up on (batch sizes included); calls on other shapes
  // within the signatures are served, and are cold the first time on each worker.
  std::vector<std::vector<std::pair<DType, std::vector<std::int64_t>>>> warmed;
  int sidecar_pid = 0;
  std::uint32_t sidecar_uid = 0;
  // Increases with every start of a sidecar of this name: a reconnect shows here.
  std::uint64_t start_generation = 0;
  std::uint64_t started_unix_ns = 0;
  std::uint32_t max_clients = 0;
  std::uint64_t arena_bytes = 0;  // this client's
  std::uint32_t client_id = 0;    // this client's channel in the sidecar
};

// What a sidecar says about itself, read without taking a channel (works while it warms up).
struct SidecarStatus {
  std::string state;  // "starting", "warming up", "ready", "stopping"
  bool ready = false;
  ModelInfo model;    // signatures filled in once ready
  std::string socket_path;
  std::uint64_t clients_connected = 0;
  std::uint64_t clients_admitted = 0;
  std::uint64_t clients_refused = 0;
  std::uint64_t clients_reclaimed = 0;
  // The longest a departed client's channel waited to be taken back (from its hang-up), since start.
  std::uint64_t slowest_reclaim_ns = 0;
  std::uint64_t requests = 0;
  // Answers whose sleeping client was woken when its request was taken, so that waking overlapped
  // the forward (--wake-ahead-us).
  std::uint64_t requests_woken_ahead = 0;
  std::uint64_t default_arena_bytes = 0;
  std::uint64_t max_arena_bytes = 0;
  bool cache_per_user = false;
  CacheStats cache;
  std::uint64_t reloads = 0;         // model reloads that took effect since start
  std::uint64_t failed_reloads = 0;  // reloads refused (the old model served on)
};

// The status of sidecar NAME through a watching connection: no channel, so it works while every
// client slot is taken and while the sidecar warms up (options.timeout bounds the wait to connect).
SIDECAR_API Result<SidecarStatus> read_status(const std::string& name, const ConnectOptions& options = {});
// Its cache statistics (enabled is false when it runs without a cache).
SIDECAR_API Result<CacheStats> read_cache_stats(const std::string& name, const ConnectOptions& options = {});

// The sidecar's counters and latency histograms (requests by status, queue wait, inference and end
// to end per signature, batch sizes, cache, connections, reloads), written out for a person, as
// JSON, or in Prometheus's text exposition format. Through a watching connection, like read_status.
enum class MetricsFormat { kText, kJson, kPrometheus };
SIDECAR_API Result<std::string> read_metrics(const std::string& name, MetricsFormat format,
                                             const ConnectOptions& options = {});

// Asks sidecar NAME to load `model_path` (empty: the file it serves, again) beside the serving
// model, warm it up on every worker, and swap it in; waits for the outcome up to options.timeout.
// The value is the sidecar's account of what it loaded; an error (kModelError) says why the old
// model still serves. Only the sidecar's own user and root may reload (kPermissionDenied).
SIDECAR_API Result<std::string> reload_model(const std::string& name, const std::string& model_path,
                                             const ConnectOptions& options = {});

class SIDECAR_API Client {
 public:
  static Result<Client> connect(const std::string& name, const ConnectOptions& options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();  // gives the channel back

  // Copies the inputs into shared memory, runs the model, copies the outputs out.
  // With the cache looked up here, a hit copies the outputs straight from the cache.
  Result<std::vector<Tensor>> infer(std::span<const TensorView> inputs, std::chrono::microseconds timeout,
                                    CachePolicy policy = CachePolicy::kUse);
  Result<std::vector<Tensor>> infer(const TensorView& input, std::chrono::microseconds timeout,
                                    CachePolicy policy = CachePolicy::kUse) {
    return infer(std::span<const TensorView>(&input, 1), timeout, policy);
  }

  // Asynchronous: up to 16 requests in flight per client (more answers "overloaded"), each with
  // its own region of the channel's arena. submit() copies the inputs into shared memory (or finds
  // the result in the cache at once); wait() returns the outputs as copies; try_get() does not
  // block (nullopt: not answered yet); cancel() keeps a request that has not started from running
  // (its wait() then answers kCancelled). A timed-out wait() abandons the request.
  Result<RequestHandle> submit(std::span<const TensorView> inputs, const SubmitOptions& options = {});
  Result<std::vector<Tensor>> wait(RequestHandle handle, std::chrono::microseconds timeout);
  std::optional<Result<std::vector<Tensor>>> try_get(RequestHandle handle);
  bool cancel(RequestHandle handle);
  std::size_t in_flight() const noexcept;

  // Zero-copy path (not while submitted requests are in flight). input_buffer() reserves the next input in shared
  // memory and returns where to write its bytes; run() sends the inputs reserved so far and returns views of the
  // outputs in shared memory, valid until the next call on this client.
  Result<std::span<std::byte>> input_buffer(DType dtype, std::span<const std::int64_t> shape);
  Result<std::span<const TensorView>> run(std::chrono::microseconds timeout, CachePolicy policy = CachePolicy::kUse);
  // Forgets the inputs reserved by input_buffer() since the last run().
  void reset_inputs() noexcept;

  CacheOutcome last_cache_outcome() const noexcept;
  ServiceInfo last_service() const noexcept;
  void set_cache_lookup(CacheLookup lookup) noexcept;
  // Statistics of the sidecar's result cache; no round trip.
  CacheStats cache_stats() const;
  // Empties the sidecar's result cache. The value is the sidecar's account of what it removed.
  Result<std::string> flush_cache(std::chrono::microseconds timeout);
  // A round trip through this client's rings that runs no model: the sidecar's scheduling loop
  // answered within `timeout` (kTimeout when it did not).
  Done ping(std::chrono::microseconds timeout);

  // What the sidecar serves; after a reconnect, the new sidecar's.
  const ModelInfo& model() const noexcept;
  // This client's channel in the sidecar (ModelInfo::client_id).
  std::uint32_t client_id() const noexcept;
  // Connections made so far: 1 after connect(), one more per reconnect.
  std::uint64_t connections() const noexcept;

  struct Impl;  // public only so that the library's helpers can name it

 private:
  explicit Client(std::unique_ptr<Impl> impl) noexcept;
  Result<RequestHandle> submit_request(std::span<const TensorView> inputs, const SubmitOptions& options,
                                       bool looked_up);
  // A request with no inputs that only `flags` describe (a flush, a ping); its answer's message.
  Result<std::string> control_request(std::uint32_t flags, std::chrono::microseconds timeout);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidecar
