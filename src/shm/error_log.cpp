#include "shmctx/shm/error_log.hpp"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "shmctx/errors.hpp"

namespace shmctx::shm {
namespace {

std::uint64_t unix_now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

bool printable_ascii(char c) noexcept { return c >= 0x20 && c <= 0x7e; }

/// The text as stored: printable ASCII only, at most kErrorTextBytes, a cut one marked.
std::string stored_text(std::string_view text, bool& truncated) {
    truncated = text.size() > kErrorTextBytes;
    const std::size_t keep =
        truncated ? kErrorTextBytes - kErrorTruncatedMarker.size() : text.size();
    std::string out(text.substr(0, keep));
    for (char& c : out) {
        if (c == '\n' || c == '\t') {
            c = ' ';
        } else if (!printable_ascii(c)) {
            c = '?';
        }
    }
    if (truncated) out += kErrorTruncatedMarker;
    return out;
}

}  // namespace

std::uint64_t error_text_hash(std::string_view text) noexcept {
    std::uint64_t h = 0xcbf2'9ce4'8422'2325ULL;
    for (const char c : text) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x0000'0100'0000'01B3ULL;
    }
    return h;
}

void init_error_log(std::span<std::byte> region) {
    const std::uint32_t capacity = error_log_capacity(region.size());
    if (capacity == 0 || reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0) {
        throw LayoutError("error-log region of " + std::to_string(region.size()) +
                          " bytes cannot hold a record or is misaligned");
    }
    auto* h = new (region.data()) ErrorLogHeader{};
    h->magic = kErrorLogMagic;
    h->version = kErrorLogVersion;
    h->record_bytes = kErrorRecordBytes;
    h->capacity = capacity;
    h->text_bytes = kErrorTextBytes;
    for (std::uint32_t i = 0; i < capacity; ++i) {
        new (region.data() + kErrorLogHeaderBytes + i * kErrorRecordBytes) ErrorRecord{};
    }
}

ErrorLogWriter::ErrorLogWriter(std::span<std::byte> region) noexcept
    : header_(std::launder(reinterpret_cast<ErrorLogHeader*>(region.data()))),
      records_(std::launder(reinterpret_cast<ErrorRecord*>(region.data() + kErrorLogHeaderBytes))),
      capacity_(error_log_capacity(region.size())) {}

void ErrorLogWriter::report(std::string_view text) noexcept { report_at(text, unix_now_ns()); }

void ErrorLogWriter::report_at(std::string_view text, std::uint64_t unix_ns) noexcept {
    if (header_ == nullptr) return;
    try {
        bool truncated = false;
        std::string stored = stored_text(text, truncated);
        const std::uint64_t hash = error_text_hash(stored);
        const std::lock_guard lock(mu_);
        // relaxed: a diagnostic total; the writer mutex orders our own updates.
        header_->reports.fetch_add(1, std::memory_order::relaxed);
        std::vector<std::uint32_t>& same_hash = index_[hash];
        for (const std::uint32_t i : same_hash) {
            if (texts_[i] != stored) continue;
            ErrorRecord& r = records_[i];
            // Only this writer (under mu_) stores seq, count and last: relaxed reads of our own
            // values.
            const std::uint64_t seq = r.seq.load(std::memory_order::relaxed);
            const std::uint64_t count = r.count.load(std::memory_order::relaxed);
            // relaxed: marks the record as being written; the release stores below order it
            // before the new field values for any reader that sees one of them.
            r.seq.store(seq + 1, std::memory_order::relaxed);
            // [errlog.field] pairs with [errlog.field] in read_error_log: a reader that loads
            // a new value also sees the odd seq stored above, so its second seq read differs.
            r.count.store(count + 1, std::memory_order::release);
            r.last_unix_ns.store(std::max(unix_ns, r.last_unix_ns.load(std::memory_order::relaxed)),
                                 std::memory_order::release);
            // [errlog.seq] pairs with [errlog.seq] in read_error_log: the record is stable.
            r.seq.store(seq + 2, std::memory_order::release);
            return;
        }
        if (texts_.size() >= capacity_) {
            // Full: say so rather than overwrite a record a reader may be relying on.
            // relaxed: a diagnostic count (writer table).
            header_->dropped.fetch_add(1, std::memory_order::relaxed);
            if (same_hash.empty()) index_.erase(hash);
            return;
        }
        const auto i = static_cast<std::uint32_t>(texts_.size());
        texts_.push_back(stored);
        same_hash.push_back(i);
        ErrorRecord& r = records_[i];
        // relaxed: as above (this record is not published yet: i >= used).
        r.seq.store(1, std::memory_order::relaxed);
        // [errlog.field] (every store below), as above.
        r.hash.store(hash, std::memory_order::release);
        r.count.store(1, std::memory_order::release);
        r.first_unix_ns.store(unix_ns, std::memory_order::release);
        r.last_unix_ns.store(unix_ns, std::memory_order::release);
        const std::uint64_t flags = truncated ? kErrorFlagTruncated : 0;
        r.meta.store(stored.size() | flags << 32, std::memory_order::release);
        std::byte padded[kErrorTextBytes] = {};
        std::memcpy(padded, stored.data(), stored.size());
        for (std::size_t w = 0; w < kErrorTextWords; ++w) {
            std::uint64_t word = 0;
            std::memcpy(&word, padded + 8 * w, 8);
            r.text[w].store(word, std::memory_order::release);
        }
        // [errlog.seq], as above.
        r.seq.store(2, std::memory_order::release);
        // [errlog.used] pairs with [errlog.used] in read_error_log: record i is complete.
        header_->used.store(i + 1, std::memory_order::release);
    } catch (...) {
        // Out of memory while logging an error: the stderr line the caller prints remains.
    }
}

namespace {

enum class RecordRead { ok, busy, corrupt };

RecordRead read_record(const ErrorRecord& r, std::uint32_t index, ErrorEntry& out,
                       std::string& why) {
    for (int attempt = 0; attempt < kErrorLogReadRetries; ++attempt) {
        // [errlog.seq] pairs with [errlog.seq] in ErrorLogWriter::report_at.
        const std::uint64_t s1 = r.seq.load(std::memory_order::acquire);
        if (s1 % 2 != 0) continue;  // being written
        if (s1 == 0) {
            why = "never written below the published count";
            return RecordRead::corrupt;
        }
        // [errlog.field] pairs with [errlog.field] in ErrorLogWriter::report_at (each load).
        const std::uint64_t hash = r.hash.load(std::memory_order::acquire);
        const std::uint64_t count = r.count.load(std::memory_order::acquire);
        const std::uint64_t first = r.first_unix_ns.load(std::memory_order::acquire);
        const std::uint64_t last = r.last_unix_ns.load(std::memory_order::acquire);
        const std::uint64_t meta = r.meta.load(std::memory_order::acquire);
        char text[kErrorTextBytes];
        for (std::size_t w = 0; w < kErrorTextWords; ++w) {
            const std::uint64_t word = r.text[w].load(std::memory_order::acquire);
            std::memcpy(text + 8 * w, &word, 8);
        }
        // relaxed: ordered after the acquire loads above; a changed value means one of them
        // may come from a newer write (see the walk-through in docs/protocol.d/counters.md).
        const std::uint64_t s2 = r.seq.load(std::memory_order::relaxed);
        if (s1 != s2) continue;
        // A stable copy: validate every value; only the locals are used.
        const auto len = static_cast<std::uint32_t>(meta);
        const auto flags = static_cast<std::uint32_t>(meta >> 32);
        char buf[96];
        if (len > kErrorTextBytes) {
            std::snprintf(buf, sizeof buf, "text length %u over %zu", len, kErrorTextBytes);
        } else if ((flags & ~kErrorFlagTruncated) != 0) {
            std::snprintf(buf, sizeof buf, "unknown flags 0x%x", flags);
        } else if (count == 0 || first == 0 || first > last) {
            std::snprintf(buf, sizeof buf, "inconsistent count/first/last");
        } else {
            buf[0] = '\0';
            for (std::uint32_t k = 0; k < len; ++k) {
                if (!printable_ascii(text[k])) {
                    std::snprintf(buf, sizeof buf, "text byte 0x%02x at %u is not printable",
                                  static_cast<unsigned char>(text[k]), k);
                    break;
                }
            }
            if (buf[0] == '\0' && error_text_hash(std::string_view(text, len)) != hash) {
                std::snprintf(buf, sizeof buf, "hash does not match the text");
            }
        }
        if (buf[0] != '\0') {
            why = buf;
            return RecordRead::corrupt;
        }
        out.index = index;
        out.count = count;
        out.first_unix_ns = first;
        out.last_unix_ns = last;
        out.truncated = (flags & kErrorFlagTruncated) != 0;
        out.text.assign(text, len);
        return RecordRead::ok;
    }
    why = "still being written after " + std::to_string(kErrorLogReadRetries) +
          " reads (its writer may have died mid-write)";
    return RecordRead::busy;
}

}  // namespace

ErrorLogSample read_error_log(std::span<const std::byte> region) {
    ErrorLogSample s;
    if (region.size() < kErrorLogHeaderBytes ||
        reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0) {
        s.problem = "error-log region smaller than its header or misaligned";
        return s;
    }
    const auto* h = std::launder(reinterpret_cast<const ErrorLogHeader*>(region.data()));
    // The immutable part, read once (plain words written before publication).
    std::uint64_t magic = 0;
    std::uint32_t fixed[4] = {};  // version, record_bytes, capacity, text_bytes
    std::memcpy(&magic, region.data(), 8);
    std::memcpy(fixed, region.data() + 8, sizeof fixed);
    const std::uint32_t capacity = fixed[2];
    if (magic == 0) {
        s.problem = "error log not initialised (a segment of a version without one?)";
        return s;
    }
    if (magic != kErrorLogMagic) {
        s.problem = "error log: bad magic";
        return s;
    }
    if (fixed[0] != kErrorLogVersion) {
        s.problem = "error log version " + std::to_string(fixed[0]) + ", expected " +
                    std::to_string(kErrorLogVersion);
        return s;
    }
    if (fixed[1] != kErrorRecordBytes || fixed[3] != kErrorTextBytes ||
        capacity > error_log_capacity(region.size())) {
        s.problem = "error log header inconsistent (record bytes " + std::to_string(fixed[1]) +
                    ", capacity " + std::to_string(capacity) + ")";
        return s;
    }
    s.valid = true;
    s.capacity = capacity;
    // [errlog.used] pairs with [errlog.used] in ErrorLogWriter::report_at.
    const std::uint32_t used = h->used.load(std::memory_order::acquire);
    // relaxed (both): diagnostic totals.
    s.dropped = h->dropped.load(std::memory_order::relaxed);
    s.reports = h->reports.load(std::memory_order::relaxed);
    s.used = std::min(used, capacity);
    if (used > capacity) {
        s.skipped.push_back("published count " + std::to_string(used) + " over the capacity " +
                            std::to_string(capacity) + ": read " + std::to_string(capacity));
    }
    const auto* records =
        std::launder(reinterpret_cast<const ErrorRecord*>(region.data() + kErrorLogHeaderBytes));
    for (std::uint32_t i = 0; i < s.used; ++i) {
        ErrorEntry e;
        std::string why;
        if (read_record(records[i], i, e, why) == RecordRead::ok) {
            s.entries.push_back(std::move(e));
        } else {
            s.skipped.push_back("record " + std::to_string(i) + ": " + why);
        }
    }
    return s;
}

}  // namespace shmctx::shm
