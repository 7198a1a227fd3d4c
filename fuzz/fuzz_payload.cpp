// Fuzz target: Payload decoding (include/shmctx/payload.hpp, src/wire/payload.cpp).
//
// Input: byte 0 picks the payload kind (its low 3 bits; 5..7 are out-of-range kinds a peer
// could write), the rest is the payload's bytes. The target copies them into a Payload
// (Payload::copy, as a receiver does) and decodes it every way the API offers:
// value<bool/int64/int32/uint8/uint64/double/float/string_view/string>() and
// as<T>() for a FlatBuffers root with a file identifier (the control schema's ControlMessage,
// "SHMC": unions, vectors of tables, structs, strings), then verified_root<T>() on the raw bytes.
// Contract: each call returns or throws DecodeError, never anything else, never reads outside
// the payload. A decoded value re-encodes (Payload::value) to a payload that decodes to the
// same value; a string view points inside the payload; a verified FlatBuffer's fields read
// within its bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"

using namespace shmctx;

namespace {

template <class T>
void check_value(const Payload& p) {
    T v{};
    if (!fuzz::expect_only<DecodeError>("Payload::value<T>", [&]() { v = p.value<T>(); })) return;
    FUZZ_CHECK(p.kind() == PayloadKind::value ||
               (p.kind() == PayloadKind::string && std::same_as<T, std::string>));
    // Round trip through the encoder (integers travel as int64: only those that fit).
    if constexpr (std::integral<T> && !std::same_as<T, bool>) {
        if (!std::in_range<std::int64_t>(v)) return;
    }
    const Payload again = Payload::value(v);
    const T w = again.template value<T>();
    if constexpr (std::floating_point<T>) {
        FUZZ_CHECK((std::isnan(v) && std::isnan(w)) || v == w);
    } else {
        FUZZ_CHECK(v == w);
    }
}

void check_string_view(const Payload& p) {
    std::string_view s;
    if (!fuzz::expect_only<DecodeError>("Payload::value<string_view>",
                                        [&]() { s = p.value<std::string_view>(); })) {
        return;
    }
    const auto* begin = reinterpret_cast<const char*>(p.bytes().data());
    FUZZ_CHECK(s.data() >= begin && s.data() + s.size() <= begin + p.size_bytes());
    (void)fuzz::touch(s);
}

void check_flatbuffer(const Payload& p) {
    const wire::fb::ControlMessage* msg = nullptr;
    if (!fuzz::expect_only<DecodeError>("Payload::as<ControlMessage>",
                                        [&]() { msg = p.as<wire::fb::ControlMessage>(); })) {
        return;
    }
    FUZZ_CHECK(p.kind() == PayloadKind::flatbuffer || p.kind() == PayloadKind::bytes);
    const auto* begin = reinterpret_cast<const std::uint8_t*>(p.bytes().data());
    const auto* at = reinterpret_cast<const std::uint8_t*>(msg);
    FUZZ_CHECK(at >= begin && at < begin + p.size_bytes());
    // A payload verifier is laxer than the control decoder (no semantic rules), so the control
    // decoder may refuse it, but only with DecodeError; what it accepts is walked in full.
    std::optional<wire::ControlView> view;
    if (fuzz::expect_only<DecodeError>("decode_control(payload)",
                                       [&]() { view.emplace(wire::decode_control(p.bytes())); })) {
        (void)fuzz::walk_control(*view);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const auto kind = static_cast<PayloadKind>(data[0] & 7U);
    const fuzz::ExactBuffer bytes(std::span(data + 1, size - 1));
    const Payload p = Payload::copy(PayloadView(kind, bytes.span()));
    FUZZ_CHECK(p.kind() == kind && p.size_bytes() == size - 1);
    check_value<bool>(p);
    check_value<std::int64_t>(p);
    check_value<std::int32_t>(p);
    check_value<std::uint8_t>(p);
    check_value<std::uint64_t>(p);
    check_value<double>(p);
    check_value<float>(p);
    check_value<std::string>(p);
    check_string_view(p);
    check_flatbuffer(p);
    // The raw-span front end: the ExactBuffer is 16-byte aligned, exactly sized.
    (void)fuzz::expect_only<DecodeError>("verified_root<ControlMessage>", [&]() {
        (void)verified_root<wire::fb::ControlMessage>(bytes.span());
    });
    return 0;
}
