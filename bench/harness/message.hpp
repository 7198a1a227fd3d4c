// Message stamping and checking for the benchmark harness (bench/README.md).
//
// Every benchmark message carries its sequence number in its first 8 bytes and, when it is long
// enough, two check words derived from it: one in the middle and one in the last 8 bytes. The
// receiver checks the received length against the run's message size and all stamped words, so
// a lost, duplicated, reordered, torn or truncated message fails the run. Only these few words
// are touched by the receiver (zero-copy transports are not charged for reading the payload).
//
// Thread-safety: free functions on caller-owned buffers; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace shmctx::bench {

/// Smallest message: the sequence number.
inline constexpr std::size_t kMinMessageBytes = 8;
/// Sequence number of the end marker that finishes a run (sent with the run's size).
inline constexpr std::uint64_t kEndSeq = ~std::uint64_t{0};

/// A message failed its sequence, size or checksum check. The run is aborted.
class CheckFailed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

constexpr std::uint64_t tail_word(std::uint64_t seq, std::size_t size) noexcept {
    return (seq * 0x9E3779B97F4A7C15ULL) ^ static_cast<std::uint64_t>(size);
}
constexpr std::uint64_t middle_word(std::uint64_t seq) noexcept { return ~seq; }
/// Offset of the middle check word (8-byte aligned for the sizes we use; memcpy regardless).
constexpr std::size_t middle_offset(std::size_t size) noexcept {
    return (size / 2) & ~std::size_t{7};
}

/// Writes seq and the check words into `msg` (size bytes, size >= kMinMessageBytes).
inline void stamp(std::byte* msg, std::size_t size, std::uint64_t seq) noexcept {
    std::memcpy(msg, &seq, sizeof seq);
    if (size >= 16) {
        const std::uint64_t t = tail_word(seq, size);
        std::memcpy(msg + size - 8, &t, sizeof t);
    }
    if (size >= 24) {
        const std::uint64_t m = middle_word(seq);
        std::memcpy(msg + middle_offset(size), &m, sizeof m);
    }
}

/// Reads the sequence number of a message (the caller has checked size >= 8).
inline std::uint64_t read_seq(const std::byte* msg) noexcept {
    std::uint64_t seq = 0;
    std::memcpy(&seq, msg, sizeof seq);
    return seq;
}

[[noreturn]] void fail_check(const char* where, std::uint64_t expected_seq,
                             std::size_t expected_size, const std::byte* msg, std::size_t got_size);

/// Checks a received message: its size must be `size` and its sequence `expected` or kEndSeq,
/// with matching check words. Returns true for a data message, false for the end marker.
/// Throws CheckFailed (with the figures) otherwise.
inline bool check(const char* where, const std::byte* msg, std::size_t got_size, std::size_t size,
                  std::uint64_t expected) {
    if (got_size != size) [[unlikely]]
        fail_check(where, expected, size, msg, got_size);
    const std::uint64_t seq = read_seq(msg);
    if (seq != expected && seq != kEndSeq) [[unlikely]]
        fail_check(where, expected, size, msg, got_size);
    if (size >= 16) {
        std::uint64_t t = 0;
        std::memcpy(&t, msg + size - 8, sizeof t);
        if (t != tail_word(seq, size)) [[unlikely]]
            fail_check(where, expected, size, msg, got_size);
    }
    if (size >= 24) {
        std::uint64_t m = 0;
        std::memcpy(&m, msg + middle_offset(size), sizeof m);
        if (m != middle_word(seq)) [[unlikely]]
            fail_check(where, expected, size, msg, got_size);
    }
    return seq != kEndSeq;
}

}  // namespace shmctx::bench
