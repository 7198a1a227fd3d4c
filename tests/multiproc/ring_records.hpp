// The deterministic record stream shared by ring_peer (producer) and the ring tests (consumer):
// record i has a pseudo-random size in [1, max_bytes], kind 1 + i % 3, flags i & 0xFFFF and
// payload bytes taken from a fixed random pool at a pseudo-random offset, so the consumer can
// check every byte with one memcmp (libc speed even in Debug builds) and any loss, duplicate or
// reordering shows up as a mismatch. A checksum over sizes and edge words is printed by both
// sides as a second, independent check.
// Thread-safety: RecordStream is immutable after construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace shmctx::test {

class RecordStream {
public:
    static constexpr std::size_t kPoolBytes = std::size_t{1} << 17;

    RecordStream(std::uint64_t seed, std::size_t max_bytes) : seed_(seed), max_bytes_(max_bytes) {
        pool_.resize(kPoolBytes + max_bytes);
        std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
        for (std::size_t i = 0; i < pool_.size(); i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::memcpy(pool_.data() + i, &x, std::min<std::size_t>(8, pool_.size() - i));
        }
    }

    static std::uint64_t mix(std::uint64_t v) noexcept {
        v += 0x9E3779B97F4A7C15ULL;
        v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ULL;
        v = (v ^ (v >> 27)) * 0x94D049BB133111EBULL;
        return v ^ (v >> 31);
    }

    std::size_t size(std::uint64_t i) const noexcept {
        return 1 + static_cast<std::size_t>(mix(seed_ ^ (i * 2)) % max_bytes_);
    }
    static std::uint16_t kind(std::uint64_t i) noexcept {
        return static_cast<std::uint16_t>(1 + i % 3);
    }
    static std::uint16_t flags(std::uint64_t i) noexcept {
        return static_cast<std::uint16_t>(i & 0xFFFF);
    }
    std::span<const std::byte> payload(std::uint64_t i) const noexcept {
        const std::size_t offset = static_cast<std::size_t>(mix(seed_ ^ (i * 2 + 1)) % kPoolBytes);
        return {pool_.data() + offset, size(i)};
    }

    /// Folds record i's size and edge bytes into `sum` (order-sensitive).
    static std::uint64_t fold(std::uint64_t sum, std::span<const std::byte> payload) noexcept {
        std::uint64_t head = 0;
        std::uint64_t tail = 0;
        const std::size_t n = std::min<std::size_t>(8, payload.size());
        std::memcpy(&head, payload.data(), n);
        std::memcpy(&tail, payload.data() + payload.size() - n, n);
        return mix(sum ^ payload.size()) ^ head ^ (tail << 1);
    }

private:
    std::uint64_t seed_;
    std::size_t max_bytes_;
    std::vector<std::byte> pool_;
};

}  // namespace shmctx::test
