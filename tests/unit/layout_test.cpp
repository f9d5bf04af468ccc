// Pins what the sidecar and its clients share: descriptors, the channel, the status page, the
// cache and the handshake. When a test here fails because a struct changed on purpose, bump
// kProtocolVersion and update the numbers: a client built against the old layout must refuse the
// new one at the handshake.
#include <gtest/gtest.h>

#include <bit>

#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/protocol.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {
namespace {

TEST(Layout, ProtocolVersionIsPinned) { EXPECT_EQ(kProtocolVersion, 7u); }

TEST(Layout, DescriptorSizesArePinned) {
  EXPECT_EQ(sizeof(TensorShape), 72u);
  EXPECT_EQ(sizeof(TensorDescriptor), 96u);
  EXPECT_EQ(sizeof(RequestDescriptor), 832u);
  EXPECT_EQ(sizeof(ResponseDescriptor), 1344u);
  EXPECT_EQ(offsetof(RequestDescriptor, posted_ns), 48u);
  EXPECT_EQ(offsetof(RequestDescriptor, inputs), 64u);
  EXPECT_EQ(offsetof(ResponseDescriptor, outputs), 64u);
  EXPECT_EQ(offsetof(ResponseDescriptor, message), 64u + 8 * 96u);
  EXPECT_EQ(offsetof(ResponseDescriptor, flags), 16u);
  EXPECT_EQ(sizeof(CacheHitRecord), 16u);
}

TEST(Layout, HandshakeMessagesArePinned) {
  EXPECT_EQ(sizeof(HandshakePrefix), 16u);
  EXPECT_EQ(offsetof(ConnectRequest, prefix), 0u);
  EXPECT_EQ(offsetof(ConnectRequest, arena_bytes), 24u);
  EXPECT_EQ(sizeof(ConnectRequest), 64u);
  EXPECT_EQ(offsetof(ConnectReply, outcome), 16u);
  EXPECT_EQ(offsetof(ConnectReply, start_generation), 24u);
  EXPECT_EQ(offsetof(ConnectReply, message), 128u);
  EXPECT_EQ(sizeof(ConnectReply), 640u);
  EXPECT_EQ(static_cast<int>(kCacheFd), 3);
}

// The head on its own line; each slot's fill counter in the slot's first line, before the descriptor.
TEST(Layout, RingHeadAndCellsSitOnTheirOwnCacheLines) {
  EXPECT_EQ(offsetof(RequestRing, head), 0u);
  EXPECT_EQ(offsetof(RequestRing, cells), 64u);
  EXPECT_EQ(alignof(RequestRing), 64u);
  EXPECT_EQ(offsetof(RequestRing::Cell, fills), 0u);
  EXPECT_EQ(offsetof(RequestRing::Cell, slot), 8u);
  EXPECT_EQ(sizeof(RequestRing::Cell), 896u);    // 8 + 832, rounded up to 14 lines
  EXPECT_EQ(sizeof(ResponseRing::Cell), 1408u);  // 8 + 1344, rounded up to 22 lines
  EXPECT_EQ(sizeof(HitLogRing::Cell), 64u);      // 8 + 16 in one line
}

TEST(Layout, ChannelIsPinned) {
  EXPECT_EQ(alignof(ChannelHeader), 64u);
  EXPECT_EQ(offsetof(ChannelHeader, magic), 0u);
  EXPECT_EQ(offsetof(ChannelHeader, arena_bytes), 32u);
  EXPECT_EQ(offsetof(ChannelHeader, client_waiting), 64u);
  EXPECT_EQ(offsetof(ChannelHeader, cache_hits), 72u);
  EXPECT_EQ(offsetof(ChannelHeader, requests), 128u);
  EXPECT_EQ(sizeof(RequestRing), 64u + 16u * 896u);
  EXPECT_EQ(sizeof(ResponseRing), 64u + 16u * 1408u);
  EXPECT_EQ(sizeof(HitLogRing), 64u + 64u * 64u);
  EXPECT_EQ(offsetof(ChannelHeader, cache_hit_log), 128u + 14400u + 22592u);
  EXPECT_EQ(sizeof(ChannelHeader), 128u + 14400u + 22592u + 4160u);
}

TEST(Layout, ChannelGeometryKeepsTheArenaPageAligned) {
  const ChannelGeometry geometry = ChannelGeometry::compute(5000);
  EXPECT_EQ(geometry.arena_offset, 45056u);  // 41280 rounded up to 11 pages
  EXPECT_EQ(geometry.arena_bytes, 8192u);
  EXPECT_EQ(geometry.channel_bytes, 45056u + 8192u);
  EXPECT_EQ(geometry.arena_offset % kArenaAlignment, 0u);
}

TEST(Layout, StatusPageIsPinned) {
  EXPECT_EQ(offsetof(StatusPage, magic), 0u);
  EXPECT_EQ(offsetof(StatusPage, protocol_version), 8u);
  EXPECT_EQ(offsetof(StatusPage, sidecar_pid), 16u);
  EXPECT_EQ(offsetof(StatusPage, start_generation), 32u);
  EXPECT_EQ(offsetof(StatusPage, cache_bytes), 64u);
  EXPECT_EQ(offsetof(StatusPage, state), 128u);
  EXPECT_EQ(offsetof(StatusPage, leader_sleeping), 192u);
  EXPECT_EQ(offsetof(StatusPage, clients), 256u);
  EXPECT_EQ(sizeof(ClientCounters), 64u);
  EXPECT_EQ(offsetof(StatusPage, cache), 320u);
  EXPECT_EQ(sizeof(CacheCounters), 88u);
  EXPECT_EQ(offsetof(StatusPage, lifecycle), 448u);
  EXPECT_EQ(offsetof(StatusPage, model_sequence), 512u);
  EXPECT_EQ(offsetof(StatusPage, model), 576u);
  EXPECT_EQ(sizeof(ShapeRange), 136u);
  EXPECT_EQ(sizeof(ModelSignature), 1672u);
  EXPECT_EQ(offsetof(ModelDescription, signatures), 272u);
  EXPECT_EQ(offsetof(ModelDescription, warmed_count), 13648u);
  EXPECT_EQ(sizeof(WarmedShape), 576u);
  EXPECT_EQ(sizeof(ModelDescription), 87384u);
  EXPECT_EQ(offsetof(StatusPage, metrics), 88000u);
  EXPECT_EQ(sizeof(MetricsShard), 5632u);
  EXPECT_EQ(sizeof(StatusPage), 178112u);
  EXPECT_EQ(kStatusPageBytes, 180224u);
  // Each worker's shard starts on its own cache line: no two workers write one line.
  EXPECT_EQ(sizeof(MetricsShard) % kCacheLine, 0u);
}

TEST(Layout, CacheLayoutIsPinned) {
  EXPECT_EQ(sizeof(CacheSlot), 64u);
  EXPECT_EQ(sizeof(CacheTags), 64u);
  EXPECT_EQ(sizeof(CacheTensor), 88u);
  EXPECT_EQ(sizeof(CacheRecordHeader), 16u);
  EXPECT_EQ(offsetof(CacheHeader, protocol_version), 8u);
  EXPECT_EQ(offsetof(CacheHeader, max_entry_bytes), 64u);
  EXPECT_EQ(offsetof(CacheHeader, generation), 128u);
  EXPECT_EQ(sizeof(CacheHeader), 192u);
  // The budget bounds the whole memfd; metadata is about 1/64 of it.
  for (std::uint64_t budget :
       {kCacheMinimumBytes, std::uint64_t{1} << 20, std::uint64_t{64} << 20, std::uint64_t{3} << 30}) {
    const CacheGeometry geometry = CacheGeometry::compute(budget);
    EXPECT_EQ(geometry.heap_offset + geometry.heap_bytes, budget);
    EXPECT_EQ(geometry.heap_offset % kCacheHeapAlignment, 0u);
    EXPECT_EQ(geometry.slots_offset, geometry.tags_offset + geometry.bucket_count * sizeof(CacheTags));
    EXPECT_GE(geometry.heap_offset, geometry.slots_offset + geometry.slot_count() * sizeof(CacheSlot));
    EXPECT_LE(geometry.metadata_bytes(), budget / 32) << budget;
    EXPECT_EQ(std::popcount(geometry.bucket_count), 1);
  }
}

TEST(Layout, InstanceNamesAreSafeFileNames) {
  EXPECT_TRUE(is_valid_instance_name("resnet-50_v2.prod"));
  EXPECT_FALSE(is_valid_instance_name(""));
  EXPECT_FALSE(is_valid_instance_name(".hidden"));
  EXPECT_FALSE(is_valid_instance_name("a/b"));
  EXPECT_FALSE(is_valid_instance_name("../x"));
  EXPECT_FALSE(is_valid_instance_name(std::string(65, 'a')));
  EXPECT_FALSE(is_valid_instance_name("sp ace"));
}

}  // namespace
}  // namespace sidecar
