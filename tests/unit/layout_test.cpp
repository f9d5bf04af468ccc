// Pins the shared-memory layout. When a test here fails because a struct changed on purpose, bump
// kLayoutVersion and update the numbers: clients built against the old layout must refuse the new.
#include "sidecar/shared/layout.hpp"

#include <gtest/gtest.h>

#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/segment.hpp"

namespace sidecar {
namespace {

TEST(Layout, DescriptorSizesArePinned) {
  EXPECT_EQ(kLayoutVersion, 3u);
  EXPECT_EQ(sizeof(TensorShape), 72u);
  EXPECT_EQ(sizeof(TensorDescriptor), 96u);
  EXPECT_EQ(sizeof(RequestDescriptor), 832u);
  EXPECT_EQ(sizeof(ResponseDescriptor), 1344u);
  EXPECT_EQ(offsetof(RequestDescriptor, inputs), 64u);
  EXPECT_EQ(offsetof(ResponseDescriptor, outputs), 64u);
  EXPECT_EQ(offsetof(ResponseDescriptor, message), 64u + 8 * 96u);
  EXPECT_EQ(offsetof(ResponseDescriptor, flags), 16u);
  EXPECT_EQ(sizeof(CacheHitRecord), 16u);
}

TEST(Layout, CacheLayoutIsPinned) {
  EXPECT_EQ(sizeof(CacheSlot), 64u);
  EXPECT_EQ(sizeof(CacheTags), 64u);
  EXPECT_EQ(sizeof(CacheTensor), 88u);
  EXPECT_EQ(sizeof(CacheRecordHeader), 16u);
  EXPECT_EQ(offsetof(CacheHeader, generation), 128u);
  EXPECT_EQ(offsetof(CacheHeader, counters), 192u);
  EXPECT_EQ(sizeof(CacheHeader), 320u);
  // The budget bounds the whole segment; metadata is about 1/64 of it.
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

TEST(Layout, RingIndicesSitOnTheirOwnCacheLines) {
  EXPECT_EQ(offsetof(RequestRing, head), 0u);
  EXPECT_EQ(offsetof(RequestRing, tail), 64u);
  EXPECT_EQ(offsetof(RequestRing, slots), 128u);
  EXPECT_EQ(alignof(RequestRing), 64u);
  EXPECT_EQ(offsetof(ResponseRing, tail) - offsetof(ResponseRing, head), 64u);
}

TEST(Layout, ChannelAndHeaderArePinned) {
  EXPECT_EQ(alignof(Channel), 64u);
  EXPECT_EQ(offsetof(Channel, response_bell), 64u);
  EXPECT_EQ(offsetof(Channel, requests), 128u);
  EXPECT_EQ(offsetof(Channel, cache_hit_log), 128u + sizeof(RequestRing) + sizeof(ResponseRing));
  EXPECT_EQ(sizeof(Channel), 128u + sizeof(RequestRing) + sizeof(ResponseRing) + sizeof(HitLogRing));
  EXPECT_EQ(offsetof(SegmentHeader, magic), 0u);
  EXPECT_EQ(offsetof(SegmentHeader, layout_version), 8u);
  EXPECT_EQ(offsetof(SegmentHeader, request_bell) % 64, 0u);
  EXPECT_EQ(offsetof(SegmentHeader, active_channels) % 64, 0u);
}

TEST(Layout, GeometryKeepsArenasPageAlignedAndDisjoint) {
  const auto geometry = SegmentGeometry::compute(3, 5000);
  EXPECT_EQ(geometry.arena_bytes, 8192u);
  EXPECT_EQ(geometry.arenas_offset % kArenaAlignment, 0u);
  EXPECT_GE(geometry.arenas_offset, geometry.channel_offset(2) + sizeof(Channel));
  EXPECT_EQ(geometry.arena_offset(1) - geometry.arena_offset(0), 8192u);
  EXPECT_EQ(geometry.segment_bytes, geometry.arena_offset(2) + 8192u);
}

TEST(Layout, InstanceNamesAreSafeFileNames) {
  EXPECT_TRUE(is_valid_instance_name("resnet-50_v2.1"));
  EXPECT_FALSE(is_valid_instance_name(""));
  EXPECT_FALSE(is_valid_instance_name(".hidden"));
  EXPECT_FALSE(is_valid_instance_name("a/b"));
  EXPECT_FALSE(is_valid_instance_name("../x"));
  EXPECT_FALSE(is_valid_instance_name(std::string(65, 'a')));
  EXPECT_EQ(segment_name("demo"), "/sidecar.demo");
}

// A segment whose header was written by another layout version is refused with a message naming
// both versions, before any offset in it is followed.
TEST(Layout, AttachRefusesOtherVersionsAndBadGeometry) {
  const std::string name = "/sidecar.layout-test-" + std::to_string(::getpid());
  const auto geometry = SegmentGeometry::compute(2, 4096);
  SegmentMapping::remove(name);
  SegmentMapping created = SegmentMapping::create(name, geometry.segment_bytes, 0600);
  SegmentHeader* header = new (created.base()) SegmentHeader;
  header->layout_version = kLayoutVersion;
  header->header_bytes = sizeof(SegmentHeader);
  header->segment_bytes = geometry.segment_bytes;
  header->channel_count = 2;
  header->ring_capacity = kRingCapacity;
  header->arena_bytes = geometry.arena_bytes;
  header->channels_offset = geometry.channels_offset;
  header->channel_stride = geometry.channel_stride;
  header->arenas_offset = geometry.arenas_offset;

  SegmentMapping attached = SegmentMapping::open(name);
  EXPECT_NE(check_segment_layout(attached).find("being created"), std::string::npos);
  header->magic.store(0x1234);
  EXPECT_NE(check_segment_layout(attached).find("bad magic"), std::string::npos);
  header->magic.store(kSegmentMagic);
  EXPECT_EQ(check_segment_layout(attached), "");

  header->layout_version = kLayoutVersion + 1;
  const std::string mismatch = check_segment_layout(attached);
  EXPECT_NE(mismatch.find("layout version mismatch"), std::string::npos) << mismatch;
  EXPECT_NE(mismatch.find(std::to_string(kLayoutVersion + 1)), std::string::npos) << mismatch;
  header->layout_version = kLayoutVersion;

  header->arenas_offset += 64;
  EXPECT_NE(check_segment_layout(attached).find("inconsistent geometry"), std::string::npos);
  header->arenas_offset -= 64;
  header->channel_count = 3;  // would put arenas past the end of the mapping
  EXPECT_NE(check_segment_layout(attached).find("inconsistent geometry"), std::string::npos);
  SegmentMapping::remove(name);
}

}  // namespace
}  // namespace sidecar
