// A single-producer single-consumer ring placed in shared memory, for fixed-size descriptors.
//
// The producer publishes each slot through a counter in the slot's own first cache line (how many
// times it has filled that slot), not through a shared tail: the consumer polls the counter of the
// slot it waits for, so the poll brings that line along instead of costing a line of its own before
// the slot can be read. The consumer publishes only its head, which the producer reads when the
// ring looks full (rigtorp/SPSCQueue's cached index). Each side keeps its authoritative index in
// private memory, so a peer that scribbles on the shared words cannot move our position: the
// consumer accepts a slot's counter only if it says "filled for my head" or "not yet", and reports
// any other value as corruption instead of reading; the producer refuses a head that no honest
// consumer could write. A zero-filled ring is an empty one.
//
// Indices are 64-bit and never wrap in practice (2^64 descriptors); the slot is index % Capacity.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

namespace sidecar {

inline constexpr std::size_t kCacheLine = 64;  // hardcoded: both processes must agree on it

template <typename Slot, std::uint32_t Capacity>
struct SpscRing {
  static_assert(Capacity >= 2 && (Capacity & (Capacity - 1)) == 0, "capacity is a power of two");
  static_assert(std::is_trivially_copyable_v<Slot> && std::is_standard_layout_v<Slot>);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

  using slot_type = Slot;
  static constexpr std::uint32_t kCapacity = Capacity;

  struct alignas(kCacheLine) Cell {
    // Written only by the producer, with release after the slot: how many times it has filled it.
    // Index i is in the slot once this reaches i / Capacity + 1. Zero for a fresh ring.
    std::atomic<std::uint64_t> fills;
    Slot slot;
  };

  // Written only by the consumer: index of the next slot it will read.
  alignas(kCacheLine) std::atomic<std::uint64_t> head;
  Cell cells[Capacity];

  // Only valid while neither side is attached (at creation, or when the sidecar recycles a channel).
  void reset() noexcept {
    head.store(0, std::memory_order_relaxed);
    for (Cell& cell : cells) cell.fills.store(0, std::memory_order_relaxed);
  }
};

// The producer's private view of a ring.
template <typename Ring>
class SpscProducer {
 public:
  SpscProducer() = default;
  // Attach to an empty ring (after reset()): the next index to fill is the consumer's head.
  explicit SpscProducer(Ring* ring) noexcept
      : ring_(ring), tail_(ring->head.load(std::memory_order_acquire)), cached_head_(tail_) {}

  // A slot to fill, or nullptr when the ring is full. Call publish() once it is filled.
  [[nodiscard]] typename Ring::slot_type* try_claim() noexcept {
    if (tail_ - cached_head_ >= Ring::kCapacity) {
      cached_head_ = ring_->head.load(std::memory_order_acquire);
      // A head ahead of our tail or more than a ring behind it is not from an honest consumer.
      if (cached_head_ > tail_ || tail_ - cached_head_ > Ring::kCapacity) {
        corrupt_ = true;
        return nullptr;
      }
      if (tail_ - cached_head_ >= Ring::kCapacity) {
        return nullptr;
      }
    }
    return &ring_->cells[tail_ % Ring::kCapacity].slot;
  }

  // Release: the slot's contents become visible before its counter says it is filled.
  void publish() noexcept {
    ring_->cells[tail_ % Ring::kCapacity].fills.store(tail_ / Ring::kCapacity + 1, std::memory_order_release);
    ++tail_;
  }

  [[nodiscard]] bool corrupt() const noexcept { return corrupt_; }
  [[nodiscard]] std::uint64_t published() const noexcept { return tail_; }
  // The cell the next publish() fills (whether or not it is free yet).
  [[nodiscard]] typename Ring::Cell* next_cell() const noexcept { return &ring_->cells[tail_ % Ring::kCapacity]; }

 private:
  Ring* ring_ = nullptr;
  std::uint64_t tail_ = 0;
  std::uint64_t cached_head_ = 0;
  bool corrupt_ = false;
};

// The consumer's private view of a ring.
template <typename Ring>
class SpscConsumer {
 public:
  SpscConsumer() = default;
  explicit SpscConsumer(Ring* ring) noexcept : ring_(ring), head_(ring->head.load(std::memory_order_relaxed)) {}

  // The oldest unread slot, or nullptr when the ring is empty (or corrupt: see corrupt()).
  // The slot lives in shared memory the producer can still write: copy what you need from it
  // before you trust it, then pop().
  [[nodiscard]] const typename Ring::slot_type* front() noexcept {
    return has_data() ? &ring_->cells[head_ % Ring::kCapacity].slot : nullptr;
  }

  // Release: our reads of the slot happen before the producer may reuse it.
  void pop() noexcept { ring_->head.store(++head_, std::memory_order_release); }

  // True when the slot at our head is filled. Acquire: the slot's contents are visible once its
  // counter is. An honest producer has filled it either once more than the index's lap (ready) or
  // exactly the lap (not yet): any other count is corruption, and a corrupt ring stays corrupt.
  [[nodiscard]] bool has_data() noexcept {
    if (corrupt_) return false;
    const std::uint64_t lap = head_ / Ring::kCapacity;
    const std::uint64_t fills = ring_->cells[head_ % Ring::kCapacity].fills.load(std::memory_order_acquire);
    if (fills == lap + 1) return true;
    if (fills != lap) corrupt_ = true;
    return false;
  }

  [[nodiscard]] bool corrupt() const noexcept { return corrupt_; }
  [[nodiscard]] std::uint64_t consumed() const noexcept { return head_; }

 private:
  Ring* ring_ = nullptr;
  std::uint64_t head_ = 0;
  bool corrupt_ = false;
};

}  // namespace sidecar
