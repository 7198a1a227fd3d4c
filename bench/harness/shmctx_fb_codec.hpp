// FlatBuffers payloads for the shmctx ring transport (the `shmctx-fb` variant): every message
// is built in a reused FlatBufferBuilder (Clear, CreateVector of the message bytes, table,
// Finish with the file identifier), written with one memcpy by try_write, and on the receiving
// side verified with shmctx::verified_root (FlatBuffers Verifier + identifier; a failure is a
// DecodeError that aborts the run) before the message bytes are handed on. The figures thus
// include encoding and verification; MB/s counts the message bytes, not the ~48-byte frame.
//
// Thread-safety: an Encoder is single thread.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "message.hpp"
#include "shmctx/bench_msg_generated.h"
#include "shmctx/payload.hpp"
#include "shmctx_transport.hpp"

SHMCTX_ROOT_TYPE(shmctx::bench::fb::BenchMsg, "SXBM");

namespace shmctx::bench {

struct FlatBuffersCodec {
    class Encoder {
    public:
        explicit Encoder(const ChannelSpec& spec) : fbb_(spec.msg_bytes + 128) {}
        std::span<const std::byte> encode(const std::byte* p, std::size_t n) {
            fbb_.Clear();
            const auto data = fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(p), n);
            const std::uint64_t seq = n >= kMinMessageBytes ? read_seq(p) : 0;
            fbb_.Finish(fb::CreateBenchMsg(fbb_, seq, tail_word(seq, n), data),
                        fb::BenchMsgIdentifier());
            return PayloadView(fbb_).bytes();
        }

    private:
        flatbuffers::FlatBufferBuilder fbb_;
    };

    template <class F>
    static void decode(std::span<const std::byte> payload, F& on_message) {
        const fb::BenchMsg* msg = verified_root<fb::BenchMsg>(payload);
        const auto* data = msg->data();
        if (data == nullptr) throw CheckFailed("shmctx-fb: message without data");
        const auto* p = reinterpret_cast<const std::byte*>(data->data());
        const std::size_t n = data->size();
        if (n < kMinMessageBytes || msg->seq() != read_seq(p) ||
            msg->check() != tail_word(msg->seq(), n))
            throw CheckFailed("shmctx-fb: table fields disagree with the message (seq " +
                              std::to_string(msg->seq()) + ")");
        on_message(p, n);
    }
};

using ShmctxRingFb = ShmctxRingT<FlatBuffersCodec>;

}  // namespace shmctx::bench
