#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <thread>

#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {
namespace {

struct Item {
  std::uint64_t sequence;
  std::uint64_t check;
};
using TestRing = SpscRing<Item, 8>;

TEST(SpscRing, FillsToCapacityThenRefuses) {
  auto ring = std::make_unique<TestRing>();
  ring->reset();
  SpscProducer<TestRing> producer(ring.get());
  SpscConsumer<TestRing> consumer(ring.get());
  EXPECT_EQ(consumer.front(), nullptr);
  for (std::uint64_t i = 0; i < 8; ++i) {
    Item* slot = producer.try_claim();
    ASSERT_NE(slot, nullptr) << i;
    slot->sequence = i;
    producer.publish();
  }
  EXPECT_EQ(producer.try_claim(), nullptr);
  for (std::uint64_t i = 0; i < 8; ++i) {
    const Item* item = consumer.front();
    ASSERT_NE(item, nullptr);
    EXPECT_EQ(item->sequence, i);
    consumer.pop();
  }
  EXPECT_EQ(consumer.front(), nullptr);
  EXPECT_FALSE(consumer.corrupt());
  EXPECT_FALSE(producer.corrupt());
}

// A fill count other than "ready" or "not yet" for the consumer's head is detected, and the consumer
// never hands out a slot for it, even once the count looks right again.
TEST(SpscRing, ConsumerRefusesCorruptFillCount) {
  auto ring = std::make_unique<TestRing>();
  ring->reset();
  SpscConsumer<TestRing> consumer(ring.get());
  ring->cells[0].fills.store(2);  // a lap ahead of anything the consumer has read
  EXPECT_EQ(consumer.front(), nullptr);
  EXPECT_TRUE(consumer.corrupt());
  ring->cells[0].fills.store(1);
  EXPECT_EQ(consumer.front(), nullptr);

  SpscConsumer<TestRing> other(ring.get());
  ring->cells[0].fills.store(~0ull);
  EXPECT_FALSE(other.has_data());
  EXPECT_TRUE(other.corrupt());
}

// A count left from a lap the consumer has already read (a replay) is corruption, not "not yet".
TEST(SpscRing, ConsumerRefusesAStaleFillCountOnALaterLap) {
  auto ring = std::make_unique<TestRing>();
  ring->reset();
  SpscProducer<TestRing> producer(ring.get());
  SpscConsumer<TestRing> consumer(ring.get());
  for (int lap = 0; lap < 2; ++lap) {
    for (int i = 0; i < 8; ++i) {
      ASSERT_NE(producer.try_claim(), nullptr);
      producer.publish();
      ASSERT_NE(consumer.front(), nullptr);
      consumer.pop();
    }
  }
  EXPECT_EQ(consumer.front(), nullptr);  // lap 2 not yet filled: slot 0 has been filled twice
  EXPECT_FALSE(consumer.corrupt());
  ring->cells[0].fills.store(1);
  EXPECT_EQ(consumer.front(), nullptr);
  EXPECT_TRUE(consumer.corrupt());
}

// The consumer keeps its own head: a producer rewriting the shared head cannot make it re-read.
TEST(SpscRing, ConsumerIgnoresSharedHeadRewrites) {
  auto ring = std::make_unique<TestRing>();
  ring->reset();
  SpscProducer<TestRing> producer(ring.get());
  SpscConsumer<TestRing> consumer(ring.get());
  producer.try_claim()->sequence = 7;
  producer.publish();
  ASSERT_NE(consumer.front(), nullptr);
  consumer.pop();
  ring->head.store(0);  // a hostile write
  EXPECT_EQ(consumer.front(), nullptr);
  EXPECT_FALSE(consumer.corrupt());
}

TEST(SpscRing, ProducerRefusesCorruptHead) {
  auto ring = std::make_unique<TestRing>();
  ring->reset();
  SpscProducer<TestRing> producer(ring.get());
  for (int i = 0; i < 8; ++i) {
    ASSERT_NE(producer.try_claim(), nullptr);
    producer.publish();
  }
  ring->head.store(100);  // ahead of anything produced
  EXPECT_EQ(producer.try_claim(), nullptr);
  EXPECT_TRUE(producer.corrupt());
}

// Two processes over a MAP_SHARED ring: every item arrives once, in order, intact.
TEST(SpscRing, CrossProcessTransferKeepsOrderAndContent) {
  void* memory = ::mmap(nullptr, sizeof(TestRing), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  auto* ring = new (memory) TestRing;
  ring->reset();
  constexpr std::uint64_t kItems = 200000;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    SpscProducer<TestRing> producer(ring);
    for (std::uint64_t i = 0; i < kItems; ++i) {
      Item* slot;
      while ((slot = producer.try_claim()) == nullptr) cpu_relax();
      slot->sequence = i;
      slot->check = i * 2654435761u;
      producer.publish();
    }
    ::_exit(0);
  }
  SpscConsumer<TestRing> consumer(ring);
  std::uint64_t bad = 0;
  for (std::uint64_t i = 0; i < kItems; ++i) {
    const Item* item;
    while ((item = consumer.front()) == nullptr) {
      ASSERT_FALSE(consumer.corrupt());
      cpu_relax();
    }
    if (item->sequence != i || item->check != i * 2654435761u) ++bad;
    consumer.pop();
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(bad, 0u);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::munmap(memory, sizeof(TestRing));
}

}  // namespace
}  // namespace sidecar
