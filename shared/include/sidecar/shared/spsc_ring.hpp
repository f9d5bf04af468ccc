// A single-producer single-consumer ring placed in shared memory, for fixed-size descriptors.
//
// The ring in shared memory holds only the two published indices and the slots. Each side keeps its
// own index and a cached copy of the other side's index in its private memory (rigtorp/SPSCQueue's
// trick: the other side's cache line is read only when the ring looks full or empty). Keeping the
// authoritative index private also means a peer that scribbles on the shared indices cannot move
// our position: the consumer sees `tail - head > Capacity` and reports the ring as corrupt instead
// of reading outside it.
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

  // Written only by the consumer: index of the next slot it will read.
  alignas(kCacheLine) std::atomic<std::uint64_t> head;
  // Written only by the producer: index of the next slot it will fill.
  alignas(kCacheLine) std::atomic<std::uint64_t> tail;
  alignas(kCacheLine) Slot slots[Capacity];

  // Only valid while neither side is attached (at creation, or when the sidecar recycles a channel).
  void reset() noexcept {
    head.store(0, std::memory_order_relaxed);
    tail.store(0, std::memory_order_relaxed);
  }
};

// The producer's private view of a ring.
template <typename Ring>
class SpscProducer {
 public:
  SpscProducer() = default;
  explicit SpscProducer(Ring* ring) noexcept
      : ring_(ring),
        tail_(ring->tail.load(std::memory_order_relaxed)),
        cached_head_(ring->head.load(std::memory_order_acquire)) {}

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
    return &ring_->slots[tail_ % Ring::kCapacity];
  }

  // Release: the slot's contents become visible before the new tail.
  void publish() noexcept { ring_->tail.store(++tail_, std::memory_order_release); }

  [[nodiscard]] bool corrupt() const noexcept { return corrupt_; }
  [[nodiscard]] std::uint64_t published() const noexcept { return tail_; }

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
  explicit SpscConsumer(Ring* ring) noexcept
      : ring_(ring),
        head_(ring->head.load(std::memory_order_relaxed)),
        // Not the shared tail: every value read from it must pass the check in front()/has_data().
        cached_tail_(head_) {}

  // The oldest unread slot, or nullptr when the ring is empty (or corrupt: see corrupt()).
  // The slot lives in shared memory the producer can still write: copy what you need from it
  // before you trust it, then pop().
  [[nodiscard]] const typename Ring::slot_type* front() noexcept {
    return has_data() ? &ring_->slots[head_ % Ring::kCapacity] : nullptr;
  }

  // Release: our reads of the slot happen before the producer may reuse it.
  void pop() noexcept { ring_->head.store(++head_, std::memory_order_release); }

  // True when there is something to read, without touching the slot. The shared tail is reloaded
  // only when the cached one says empty, and checked every time it is.
  [[nodiscard]] bool has_data() noexcept {
    if (cached_tail_ != head_) return true;
    cached_tail_ = ring_->tail.load(std::memory_order_acquire);
    if (cached_tail_ < head_ || cached_tail_ - head_ > Ring::kCapacity) {
      corrupt_ = true;
      cached_tail_ = head_;
      return false;
    }
    return cached_tail_ != head_;
  }

  [[nodiscard]] bool corrupt() const noexcept { return corrupt_; }
  [[nodiscard]] std::uint64_t consumed() const noexcept { return head_; }

 private:
  Ring* ring_ = nullptr;
  std::uint64_t head_ = 0;
  std::uint64_t cached_tail_ = 0;
  bool corrupt_ = false;
};

}  // namespace sidecar
