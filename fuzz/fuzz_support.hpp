// Shared helpers of the libFuzzer targets (docs/protocol.d/fuzz.md).
//
// A target states the library's contract with FUZZ_CHECK (a violated check aborts, which
// libFuzzer reports as a crash with the input saved) and lets only the documented exception
// types through `expect_only<...>`: any other exception is a contract violation too.
// Thread-safety: single thread (libFuzzer calls a target from one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string_view>
#include <typeinfo>

#include "shmctx/errors.hpp"
#include "shmctx/wire/codec.hpp"

namespace shmctx::fuzz {

[[noreturn]] inline void contract_violation(const char* file, int line, const char* what) {
    std::fprintf(stderr, "%s:%d: contract violated: %s\n", file, line, what);
    std::abort();
}

#define FUZZ_CHECK(cond)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            ::shmctx::fuzz::contract_violation(__FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (false)

/// With SHMCTX_FUZZ_TRACE set in the environment, prints what a target did with an input (to
/// check by hand that a seed reaches the code it was made for); otherwise does nothing.
inline bool tracing() {
    static const bool on = std::getenv("SHMCTX_FUZZ_TRACE") != nullptr;
    return on;
}
#define FUZZ_TRACE(...)                                  \
    do {                                                 \
        if (::shmctx::fuzz::tracing()) {                 \
            std::fprintf(stderr, "trace: " __VA_ARGS__); \
            std::fputc('\n', stderr);                    \
        }                                                \
    } while (false)

/// Runs `fn`; returns true when it returned, false when it threw one of `Allowed` (the
/// documented error types of the call). Anything else thrown aborts with its type and text.
template <class... Allowed, class Fn>
bool expect_only(const char* call, Fn&& fn) {
    try {
        fn();
        return true;
    } catch (const std::exception& e) {
        if ((... || (dynamic_cast<const Allowed*>(&e) != nullptr))) {
            FUZZ_TRACE("%s: %s", call, e.what());
            FUZZ_CHECK(std::strlen(e.what()) != 0);  // every error says why
            return false;
        }
        std::fprintf(stderr, "%s threw an undocumented %s: %s\n", call, typeid(e).name(), e.what());
        std::abort();
    }
}

/// A heap copy of `data` with exactly `size` bytes (ASan reports any read past them) at an
/// address aligned to 16 (operator new[]), as a ring delivers a record (16-byte positions).
class ExactBuffer {
public:
    explicit ExactBuffer(std::span<const std::uint8_t> data)
        : size_(data.size()), bytes_(new std::byte[data.size() == 0 ? 1 : data.size()]) {
        if (size_ != 0) std::memcpy(bytes_.get(), data.data(), size_);
    }
    std::span<const std::byte> span() const noexcept { return {bytes_.get(), size_}; }

private:
    std::size_t size_;
    std::unique_ptr<std::byte[]> bytes_;
};

/// Reads every byte of `bytes` (ASan checks each read) and folds them, so the reads stay.
inline std::uint64_t touch(std::span<const std::byte> bytes) noexcept {
    std::uint64_t sum = 0;
    for (const std::byte b : bytes) sum = sum * 31 + static_cast<std::uint8_t>(b);
    return sum;
}
inline std::uint64_t touch(std::string_view s) noexcept {
    return touch(std::as_bytes(std::span(s)));
}

/// Reads every field of a verified control message through the generated accessors (each read
/// within the verified bounds, else ASan reports it) and returns a fold of what it read.
std::uint64_t walk_control(const wire::ControlView& view);

/// Re-encodes a verified control message with ControlEncoder, decodes the result and checks
/// that every field survived (the decoder and encoder agree on the format).
void check_round_trip(const wire::ControlView& view);

}  // namespace shmctx::fuzz
