// The distinct-error log in the error-log region of the actor segment (actor_segment.hpp;
// DESIGN.md §6 "Counters"; docs/protocol.d/counters.md has the seqlock walk-through). Aeron's
// distinct-error log idea: one record per distinct error text, with how often and when it was
// first and last seen, so a flood of one failure costs one record, and `shmctx errors` can read
// it from any process, also after the owner died.
//
// Region layout (offsets from the start of the error-log region, page aligned):
//
//   0     +--------------------------------------------------------+
//         | ErrorLogHeader (128)                                   |
//         |   0 magic u64 "SHMCTXEL" | 8 version u32 |             |  creator, before the
//         |   12 record_bytes u32 (512) | 16 capacity u32 |        |  segment is published
//         |   20 text_bytes u32 (464) | 24 reserved to 64          |
//         |   64 used u32 atomic | 68 pad u32 |                    |  owner (writer mutex)
//         |   72 dropped u64 atomic | 80 reports u64 atomic | pad  |
//   128   +--------------------------------------------------------+
//         | ErrorRecord[capacity]   (512 each)                     |  owner (writer mutex)
//         +--------------------------------------------------------+
//
//   ErrorRecord (every word an atomic u64, so that a reader racing the writer reads no torn
//   word and no C++ data race exists):
//     0 seq      0: never written; odd: being written; even > 0: stable
//     8 hash     FNV-1a 64 of the stored text
//    16 count    times reported
//    24 first    CLOCK_REALTIME ns of the first report
//    32 last     CLOCK_REALTIME ns of the latest report
//    40 meta     text_len (low 32 bits) | flags (high 32; bit 0 = truncated)
//    48 text     464 bytes, 58 words: text_len bytes of printable ASCII, then zeros
//
// Writers: only the owning process, under its process-local mutex (one writer at a time; a
// process dies holding nothing shared). `used` counts records that were ever completed: record
// i < used is published ([errlog.used]). A record is rewritten only to bump count/last; its
// hash and text never change once published.
//
// Readers (any process): seqlock. seq (acquire), fields (acquire each), seq again (relaxed); a
// record is taken only when both seq reads are equal and even and every field validates
// (text_len ≤ 464, every text byte printable ASCII, hash = FNV-1a of the text, first ≤ last,
// count ≥ 1). A record still changing after kErrorLogReadRetries tries is reported as busy; a
// record that fails validation is reported as corrupt. Neither stops the walk.
//
// Thread-safety: ErrorLogWriter is thread-safe (its own mutex); read_error_log is thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace shmctx::shm {

/// "SHMCTXEL" read as a little-endian u64.
inline constexpr std::uint64_t kErrorLogMagic = 0x4C45'5854'434D'4853ULL;
inline constexpr std::uint32_t kErrorLogVersion = 1;
inline constexpr std::size_t kErrorLogHeaderBytes = 128;
inline constexpr std::size_t kErrorRecordBytes = 512;
inline constexpr std::size_t kErrorTextBytes = kErrorRecordBytes - 48;
inline constexpr std::size_t kErrorTextWords = kErrorTextBytes / 8;
/// Marker ending a text cut to fit kErrorTextBytes.
inline constexpr std::string_view kErrorTruncatedMarker = "[...]";
inline constexpr std::uint32_t kErrorFlagTruncated = 1;
/// Attempts a reader makes at one record that keeps changing before calling it busy.
inline constexpr int kErrorLogReadRetries = 64;

struct ErrorLogHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t record_bytes;
    std::uint32_t capacity;
    std::uint32_t text_bytes;
    std::byte reserved0[64 - 24];
    std::atomic<std::uint32_t> used;  ///< records published ([errlog.used])
    std::uint32_t reserved1;
    std::atomic<std::uint64_t> dropped;  ///< reports of new texts refused: the log was full
    std::atomic<std::uint64_t> reports;  ///< every report, repeats included
    std::byte reserved2[kErrorLogHeaderBytes - 88];
};
static_assert(sizeof(ErrorLogHeader) == kErrorLogHeaderBytes);
static_assert(offsetof(ErrorLogHeader, record_bytes) == 12 &&
              offsetof(ErrorLogHeader, capacity) == 16 &&
              offsetof(ErrorLogHeader, text_bytes) == 20 && offsetof(ErrorLogHeader, used) == 64 &&
              offsetof(ErrorLogHeader, dropped) == 72 && offsetof(ErrorLogHeader, reports) == 80);
static_assert(std::is_standard_layout_v<ErrorLogHeader> &&
              std::is_trivially_destructible_v<ErrorLogHeader>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
              std::atomic<std::uint64_t>::is_always_lock_free);

struct ErrorRecord {
    std::atomic<std::uint64_t> seq;
    std::atomic<std::uint64_t> hash;
    std::atomic<std::uint64_t> count;
    std::atomic<std::uint64_t> first_unix_ns;
    std::atomic<std::uint64_t> last_unix_ns;
    std::atomic<std::uint64_t> meta;  ///< text_len | flags << 32
    std::atomic<std::uint64_t> text[kErrorTextWords];
};
static_assert(sizeof(ErrorRecord) == kErrorRecordBytes);
static_assert(offsetof(ErrorRecord, meta) == 40 && offsetof(ErrorRecord, text) == 48);
static_assert(std::is_standard_layout_v<ErrorRecord> &&
              std::is_trivially_destructible_v<ErrorRecord>);

/// Records a region of `region_bytes` holds.
constexpr std::uint32_t error_log_capacity(std::size_t region_bytes) noexcept {
    return region_bytes < kErrorLogHeaderBytes
               ? 0
               : static_cast<std::uint32_t>((region_bytes - kErrorLogHeaderBytes) /
                                            kErrorRecordBytes);
}

/// FNV-1a 64 of `text` (the record key).
std::uint64_t error_text_hash(std::string_view text) noexcept;

/// Writes the header of a zeroed error-log region (the creator, before publication). Throws
/// LayoutError if the region cannot hold one record or is misaligned.
void init_error_log(std::span<std::byte> region);

/// The owner's writer of its error log. Thread-safety: thread-safe.
class ErrorLogWriter {
public:
    ErrorLogWriter() noexcept = default;  ///< logs nothing
    /// Views `region` (initialised by init_error_log, owned by this process).
    explicit ErrorLogWriter(std::span<std::byte> region) noexcept;
    ErrorLogWriter(const ErrorLogWriter&) = delete;
    ErrorLogWriter& operator=(const ErrorLogWriter&) = delete;

    /// Counts one occurrence of `text`: bumps its record, or adds one. The text is stored with
    /// bytes outside printable ASCII replaced ('\n' and '\t' by ' ', others by '?') and cut to
    /// kErrorTextBytes with kErrorTruncatedMarker at its end; records are keyed by the stored
    /// text. A new text when the log is full increments `dropped` instead (never overwrites).
    /// Never throws; takes the writer mutex (not for the hot path).
    void report(std::string_view text) noexcept;
    /// `report` with an explicit wall-clock time (tests).
    void report_at(std::string_view text, std::uint64_t unix_ns) noexcept;

private:
    std::mutex mu_;
    ErrorLogHeader* header_ = nullptr;
    ErrorRecord* records_ = nullptr;
    std::uint32_t capacity_ = 0;
    std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> index_;  // hash -> records
    std::vector<std::string> texts_;                                       // stored text by index
};

/// One record as a reader validated it.
struct ErrorEntry {
    std::uint32_t index = 0;
    std::uint64_t count = 0;
    std::uint64_t first_unix_ns = 0;
    std::uint64_t last_unix_ns = 0;
    bool truncated = false;
    std::string text;
};

/// What read_error_log found.
struct ErrorLogSample {
    bool valid = false;  ///< the header validated; else `problem` says why
    std::string problem;
    std::uint32_t capacity = 0;
    std::uint32_t used = 0;
    std::uint64_t dropped = 0;
    std::uint64_t reports = 0;
    std::vector<ErrorEntry> entries;
    /// Records skipped, each with the reason ("record 3: still being written after 64 reads",
    /// "record 5: text byte 0x07 at 12 is not printable").
    std::vector<std::string> skipped;
};

/// Reads an error-log region of any process (read-only mapping allowed); never throws, never
/// reads outside `region`.
ErrorLogSample read_error_log(std::span<const std::byte> region);

}  // namespace shmctx::shm
