// Scheduling, batching and fairness of the real Server, run in this process with a fake
// ModelRunner whose forward the test can hold and release, and real clients over its socket: fast,
// no LibTorch, no Python.
#include <gtest/gtest.h>

#include <future>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "client_helpers.hpp"
#include "echo_runner.hpp"
#include "runtime_files.hpp"
#include "server.hpp"
#include "sidecar/client.hpp"
#include "test_runtime_dir.hpp"

namespace sidecar {
namespace {

using namespace std::chrono_literals;

// Multiplies its input (by 2 unless told otherwise), and keeps the rows of every forward it ran. A
// held runner blocks every forward at its start until released, so the test can queue requests
// behind it.
class FakeRunner final : public ModelRunner {
 public:
  explicit FakeRunner(float factor = 2.0f) : factor_(factor) {}
  std::size_t input_count() const noexcept override { return 1; }
  const std::string& preparation() const noexcept override { return preparation_; }

  // Its output has its input's shape and dtype, as an echo's does.
  std::vector<WarmupResult> warm_up(const std::vector<InputSignature>& signatures, int iterations) override {
    return make_echo_runner(1)->warm_up(signatures, iterations);
  }

  CallOutcome run(std::span<const InputView> inputs, OutputSink& sink) noexcept override {
    {
      std::unique_lock lock(mutex_);
      rows_.push_back(inputs[0].shape.dims[0]);
      changed_.notify_all();
      changed_.wait(lock, [&] { return !held_; });
    }
    CallOutcome outcome;
    if (fail_batches_ && inputs[0].shape.dims[0] > 1) {
      outcome.status = Status::kModelError;
      outcome.message = "this runner takes one row at a time";
      return outcome;
    }
    const auto* in = static_cast<const float*>(inputs[0].data);
    const std::uint64_t count = element_count(inputs[0].shape);
    thread_local std::vector<float> out;
    out.resize(count);
    for (std::uint64_t i = 0; i < count; ++i) out[i] = in[i] * factor_;
    const OutputView view{inputs[0].shape, out.data(), count * sizeof(float)};
    outcome.status = sink.accept(std::span<const OutputView>(&view, 1), outcome.message);
    return outcome;
  }

  // Forwards of more than one row fail: every batch falls back to running its requests alone.
  void fail_batches() {
    std::lock_guard lock(mutex_);
    fail_batches_ = true;
  }
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_ = false;
    changed_.notify_all();
  }
  // Waits until `count` forwards have started.
  void wait_for_forwards(std::size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return rows_.size() >= count; });
  }
  std::vector<std::int64_t> rows() {
    std::lock_guard lock(mutex_);
    return rows_;
  }

 private:
  float factor_;
  std::string preparation_ = "fake";
  std::mutex mutex_;
  std::condition_variable changed_;
  bool held_ = false;
  bool fail_batches_ = false;
  std::vector<std::int64_t> rows_;
};

TensorShape rows_of_four(std::int64_t rows) {
  TensorShape shape{};
  shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  shape.rank = 2;
  shape.dims[0] = rows;
  shape.dims[1] = 4;
  return shape;
}

// A Server over a FakeRunner, serving "rows x 4" float32 inputs (declared 1x4), in this process.
class InProcessSidecar {
 public:
  explicit InProcessSidecar(std::uint32_t max_batch, std::uint32_t queue_delay_us = 0, std::uint64_t cache_bytes = 0) {
    spdlog::set_level(spdlog::level::warn);
    static int counter = 0;
    options_.name = "sched-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    options_.model_path = "fake";
    options_.runtime_dir = testing::test_runtime_dir();
    options_.warmup_signatures = {{rows_of_four(1)}};
    options_.workers = 1;
    options_.spin_us = 0;
    options_.max_batch = max_batch;
    options_.max_queue_delay_us = queue_delay_us;
    options_.cache_bytes = cache_bytes;
    options_.max_clients = 32;
    options_.arena_bytes = 64 << 10;
    auto runner = std::make_unique<FakeRunner>();
    runner_ = runner.get();
    Result<InstanceLock> lock = InstanceLock::acquire(options_.runtime_dir, options_.name);
    if (!lock.ok()) throw std::runtime_error(lock.message());
    server_ = std::make_unique<Server>(options_, std::move(runner), options_.runtime_dir, std::move(*lock));
    if (Done opened = server_->open(); !opened.ok()) throw std::runtime_error(opened.message());
    if (Done started = server_->start(); !started.ok()) throw std::runtime_error(started.message());
    server_->mark_ready();
  }
  ~InProcessSidecar() {
    if (runner_ != nullptr) runner_->release();
    server_->stop();
  }
  // After a reload the first runner is gone with its model.
  void forget_runner() { runner_ = nullptr; }
  const std::string& name() const { return options_.name; }
  FakeRunner& runner() { return *runner_; }
  Server& server() { return *server_; }

 private:
  SidecarOptions options_;
  FakeRunner* runner_ = nullptr;
  std::unique_ptr<Server> server_;
};

std::vector<float> values_for(std::int64_t rows, float base) {
  std::vector<float> values(static_cast<std::size_t>(rows) * 4);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = base + static_cast<float>(i);
  return values;
}

// Requests that queued behind a running forward go together in the next one, each answered with
// its own rows, and each told how many shared its forward.
TEST(Scheduling, RequestsQueuedBehindAForwardShareTheNextOne) {
  InProcessSidecar sidecar(/*max_batch=*/4);
  Client first = testing::connect_or_fail(sidecar.name());
  std::vector<Client> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(testing::connect_or_fail(sidecar.name()));

  sidecar.runner().hold();
  const std::vector<float> first_values = values_for(1, 100);
  const TensorShape one = rows_of_four(1);
  const TensorView first_view = TensorView::of(first_values, std::span<const std::int64_t>(one.dims, 2));
  auto running = first.submit(std::span<const TensorView>(&first_view, 1));
  ASSERT_TRUE(running.ok()) << running.message();
  sidecar.runner().wait_for_forwards(1);

  // Rows 1, 2 and 1: four in all, the most a batch takes here.
  const std::int64_t rows[] = {1, 2, 1};
  std::vector<std::vector<float>> values;
  std::vector<TensorShape> shapes;
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 3; ++i) {
    values.push_back(values_for(rows[i], 10.0f * static_cast<float>(i)));
    shapes.push_back(rows_of_four(rows[i]));
  }
  for (int i = 0; i < 3; ++i) {
    const TensorView view = TensorView::of(values[i], std::span<const std::int64_t>(shapes[i].dims, 2));
    auto handle = queued[i].submit(std::span<const TensorView>(&view, 1));
    ASSERT_TRUE(handle.ok()) << handle.message();
    handles.push_back(*handle);
  }
  sidecar.runner().release();
  ASSERT_TRUE(first.wait(*running, 10s).ok());
  for (int i = 0; i < 3; ++i) {
    auto result = queued[i].wait(handles[i], 10s);
    ASSERT_TRUE(result.ok()) << result.message();
    const auto answer = (*result)[0].values<float>();
    ASSERT_EQ(answer.size(), values[i].size());
    for (std::size_t k = 0; k < answer.size(); ++k) EXPECT_EQ(answer[k], values[i][k] * 2.0f) << i << " " << k;
    EXPECT_EQ((*result)[0].shape, (std::vector<std::int64_t>{rows[i], 4}));
    EXPECT_EQ(queued[i].last_service().batch_size, 3u);
  }
  EXPECT_EQ(sidecar.runner().rows(), (std::vector<std::int64_t>{1, 4}));
}

// A batch whose forward fails runs its requests one by one, and each one's result is cached under
// its own inputs: a request's private copies of its inputs (for the cache key) must outlive the
// next request's run, or its result is lost (or stored from freed memory).
TEST(Scheduling, ABatchThatFailsRunsItsRequestsAloneAndCachesEach) {
  InProcessSidecar sidecar(/*max_batch=*/4, /*queue_delay_us=*/0, /*cache_bytes=*/1 << 20);
  sidecar.runner().fail_batches();
  Client first = testing::connect_or_fail(sidecar.name());
  std::vector<Client> queued;
  for (int i = 0; i < 2; ++i) queued.push_back(testing::connect_or_fail(sidecar.name()));

  sidecar.runner().hold();
  const TensorShape one = rows_of_four(1);
  const std::span<const std::int64_t> dims(one.dims, 2);
  const std::vector<float> first_values = values_for(1, 100);
  const TensorView first_view = TensorView::of(first_values, dims);
  auto running = first.submit(std::span<const TensorView>(&first_view, 1));
  ASSERT_TRUE(running.ok()) << running.message();
  sidecar.runner().wait_for_forwards(1);

  // Equal sizes: the second request's private copy lands where the first one's was.
  const std::vector<std::vector<float>> values{values_for(1, 10), values_for(1, 20)};
  std::vector<RequestHandle> handles;
  for (int i = 0; i < 2; ++i) {
    const TensorView view = TensorView::of(values[i], dims);
    auto handle = queued[i].submit(std::span<const TensorView>(&view, 1));
    ASSERT_TRUE(handle.ok()) << handle.message();
    handles.push_back(*handle);
  }
  sidecar.runner().release();
  ASSERT_TRUE(first.wait(*running, 10s).ok());
  for (int i = 0; i < 2; ++i) {
    auto result = queued[i].wait(handles[i], 10s);
    ASSERT_TRUE(result.ok()) << result.message();
    const auto answer = (*result)[0].values<float>();
    ASSERT_EQ(answer.size(), values[i].size());
    for (std::size_t k = 0; k < answer.size(); ++k) EXPECT_EQ(answer[k], values[i][k] * 2.0f) << i << " " << k;
  }
  // The lone first forward, the batch of two that failed, then each alone.
  EXPECT_EQ(sidecar.runner().rows(), (std::vector<std::int64_t>{1, 2, 1, 1}));
  EXPECT_EQ(first.cache_stats().inserts, 3u);
  for (int i = 0; i < 2; ++i) {  // and each is answered from the cache under its own inputs
    const TensorView view = TensorView::of(values[i], dims);
    auto again = queued[i].infer(std::span<const TensorView>(&view, 1), 10s);
    ASSERT_TRUE(again.ok()) << again.message();
    EXPECT_EQ(queued[i].last_cache_outcome(), CacheOutcome::kHitInClient);
    EXPECT_EQ((*again)[0].values<float>()[0], values[i][0] * 2.0f);
  }
}

// A reload under a running forward: the new model's workers serve beside the old one's, the
// request the old model took finishes on it, and the reload is reported done only after it has.
TEST(Reloading, ARequestFinishesOnTheModelThatTookIt) {
  InProcessSidecar sidecar(/*max_batch=*/1);
  sidecar.server().set_model_loader([](const std::string&) { return std::make_unique<FakeRunner>(3.0f); });
  Client old_one = testing::connect_or_fail(sidecar.name());
  Client new_one = testing::connect_or_fail(sidecar.name());
  const std::vector<float> values = values_for(1, 1);
  const TensorShape one = rows_of_four(1);
  const TensorView view = TensorView::of(values, std::span<const std::int64_t>(one.dims, 2));

  sidecar.runner().hold();
  auto held = old_one.submit(std::span<const TensorView>(&view, 1));
  ASSERT_TRUE(held.ok()) << held.message();
  sidecar.runner().wait_for_forwards(1);

  std::promise<Result<std::string>> reloaded;
  sidecar.server().request_reload("times-three", [&](const Result<std::string>& outcome) { reloaded.set_value(outcome); });
  auto reply = reloaded.get_future();
  // Served by the new model while the old one still runs the first request.
  auto fresh = new_one.infer(view, 10s);
  ASSERT_TRUE(fresh.ok()) << fresh.message();
  EXPECT_EQ((*fresh)[0].values<float>()[0], values[0] * 3.0f);
  EXPECT_EQ(reply.wait_for(100ms), std::future_status::timeout) << "done while the old model still ran a request";

  sidecar.runner().release();
  auto finished = old_one.wait(*held, 10s);
  ASSERT_TRUE(finished.ok()) << finished.message();
  EXPECT_EQ((*finished)[0].values<float>()[0], values[0] * 2.0f);
  ASSERT_EQ(reply.wait_for(10s), std::future_status::ready);
  sidecar.forget_runner();
  const Result<std::string> outcome = reply.get();
  ASSERT_TRUE(outcome.ok()) << outcome.message();
  EXPECT_NE(outcome->find("times-three"), std::string::npos) << *outcome;
  EXPECT_EQ(old_one.model().model_path, "times-three");
}

// Without batching each request gets a forward of its own, in the order the leader takes them.
TEST(Scheduling, WithoutBatchingEveryRequestRunsAlone) {
  InProcessSidecar sidecar(/*max_batch=*/1);
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(testing::connect_or_fail(sidecar.name()));
  sidecar.runner().hold();
  const std::vector<float> values = values_for(1, 1);
  const TensorShape one = rows_of_four(1);
  const TensorView view = TensorView::of(values, std::span<const std::int64_t>(one.dims, 2));
  std::vector<RequestHandle> handles;
  for (Client& client : clients) handles.push_back(*client.submit(std::span<const TensorView>(&view, 1)));
  sidecar.runner().wait_for_forwards(1);
  sidecar.runner().release();
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i].wait(handles[i], 10s).ok());
    EXPECT_EQ(clients[i].last_service().batch_size, 1u);
  }
  EXPECT_EQ(sidecar.runner().rows(), (std::vector<std::int64_t>{1, 1, 1}));
}

// Admission: the declared shape, and with batching 2..max_batch rows of it; anything else is
// refused by name, without a forward.
TEST(Scheduling, AdmissionTakesTheDeclaredShapeAndBatchableRowsOnly) {
  InProcessSidecar sidecar(/*max_batch=*/4);
  Client client = testing::connect_or_fail(sidecar.name());
  for (std::int64_t rows : {1, 2, 4}) {
    const std::vector<float> values = values_for(rows, 0);
    const TensorShape shape = rows_of_four(rows);
    EXPECT_TRUE(client.infer(TensorView::of(values, std::span<const std::int64_t>(shape.dims, 2)), 5s).ok()) << rows;
  }
  const std::size_t forwards = sidecar.runner().rows().size();
  const std::vector<float> five = values_for(5, 0);
  const TensorShape five_rows = rows_of_four(5);
  auto too_many = client.infer(TensorView::of(five, std::span<const std::int64_t>(five_rows.dims, 2)), 5s);
  EXPECT_EQ(too_many.code(), ErrorCode::kRejected);
  EXPECT_NE(too_many.message().find("input 0: expected [1, 4] float32, got [5, 4] float32"), std::string::npos)
      << too_many.message();
  const std::vector<float> wide(8, 0.0f);
  const std::int64_t wide_shape[] = {1, 8};
  auto wrong = client.infer(TensorView::of(wide, wide_shape), 5s);
  EXPECT_EQ(wrong.code(), ErrorCode::kRejected);
  EXPECT_EQ(sidecar.runner().rows().size(), forwards) << "a refused request ran the model";
}

// A client that keeps its ring full cannot push another back by more than the request running
// when the other's arrives and the one taken right after: the leader takes from clients in turn.
TEST(Scheduling, AFloodingClientCannotPushAnotherBackByMoreThanOneRequest) {
  InProcessSidecar sidecar(/*max_batch=*/1);
  Client flooding = testing::connect_or_fail(sidecar.name());
  Client victim = testing::connect_or_fail(sidecar.name());
  const std::vector<float> values = values_for(1, 3);
  const TensorShape one = rows_of_four(1);
  const TensorView view = TensorView::of(values, std::span<const std::int64_t>(one.dims, 2));
  sidecar.runner().hold();
  std::vector<RequestHandle> flood;
  for (std::uint32_t i = 0; i < kRingCapacity; ++i) flood.push_back(*flooding.submit(std::span<const TensorView>(&view, 1)));
  sidecar.runner().wait_for_forwards(1);
  auto victims = victim.submit(std::span<const TensorView>(&view, 1));
  ASSERT_TRUE(victims.ok());
  sidecar.runner().release();
  ASSERT_TRUE(victim.wait(*victims, 10s).ok());
  const std::uint64_t victim_order = victim.last_service().service_order;
  ASSERT_TRUE(flooding.wait(flood[0], 10s).ok());
  const std::uint64_t first_flood_order = flooding.last_service().service_order;
  EXPECT_LE(victim_order, first_flood_order + 2) << "the victim waited behind the flood";
  for (std::size_t i = 1; i < flood.size(); ++i) EXPECT_TRUE(flooding.wait(flood[i], 10s).ok());
}

}  // namespace
}  // namespace sidecar
