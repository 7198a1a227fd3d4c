#include "shmctx/uuid.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "shmctx/errors.hpp"

namespace shmctx {

Uuid Uuid::random() {
    Uuid u;
    std::size_t got = 0;
    while (got < u.bytes.size()) {
        const ssize_t n = ::getrandom(u.bytes.data() + got, u.bytes.size() - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw SystemError(std::string("getrandom: ") + std::strerror(errno));
        }
        got += static_cast<std::size_t>(n);
    }
    u.bytes[6] = static_cast<std::uint8_t>((u.bytes[6] & 0x0FU) | 0x40U);  // version 4
    u.bytes[8] = static_cast<std::uint8_t>((u.bytes[8] & 0x3FU) | 0x80U);  // RFC 4122 variant
    return u;
}

bool Uuid::is_nil() const noexcept {
    for (auto b : bytes) {
        if (b != 0) return false;
    }
    return true;
}

std::string Uuid::to_hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(32);
    for (auto b : bytes) {
        out.push_back(kDigits[b >> 4U]);
        out.push_back(kDigits[b & 0x0FU]);
    }
    return out;
}

std::string Uuid::short_hex() const { return to_hex().substr(0, 8); }

bool Uuid::parse_hex(std::string_view hex, Uuid& out) noexcept {
    if (hex.size() != 32) return false;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    Uuid u;
    for (std::size_t i = 0; i < 16; ++i) {
        const int hi = nibble(hex[2 * i]);
        const int lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        u.bytes[i] = static_cast<std::uint8_t>((hi << 4) | lo);
    }
    out = u;
    return true;
}

}  // namespace shmctx
