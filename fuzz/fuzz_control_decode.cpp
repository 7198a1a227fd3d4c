// Fuzz target: control-record decoding (wire::decode_control, src/wire/codec.cpp).
//
// Input: the bytes of one control record exactly as the ring would hand them over (a heap
// copy of exactly that size, 16-byte aligned, so ASan sees any read past the record).
// Contract: decode_control either returns a view or throws DecodeError (never another type,
// never a crash or an out-of-bounds read). A returned view has a known body type whose
// semantic rules hold, every field reads within the record, and re-encoding it with
// ControlEncoder and decoding again gives the same fields.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fuzz_support.hpp"

using namespace shmctx;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const fuzz::ExactBuffer record(std::span(data, size));
    std::optional<wire::ControlView> view;
    if (!fuzz::expect_only<DecodeError>(
            "decode_control", [&]() { view.emplace(wire::decode_control(record.span())); })) {
        return 0;
    }
    FUZZ_CHECK(view->type() != wire::fb::ControlBody::NONE);
    (void)fuzz::walk_control(*view);
    fuzz::check_round_trip(*view);
    return 0;
}
