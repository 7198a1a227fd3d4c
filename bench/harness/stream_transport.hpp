// shmctx's public stream API as a harness transport (issue #11: "plain stream and drain"), next to
// the raw ring (shmctx_transport.hpp): what an application gets, with the actor runtime around it.
//
//   shmctx-stream        MsgStream::send + MsgStream::receive
//   shmctx-stream-drain  MsgStream::send + MsgStream::drain(batch)
//   shmctx-stream-batch  MsgStream::send_many(batch) + MsgStream::drain(batch): the sender
//                        copies each message into a batch buffer and sends it when full (or
//                        at flush(), which the round trips call after every message)
//
// Per run, each process is an Actor in the harness's namespace ("bp-<run>" in the parent,
// "bq-<run>" in the peer). The peer exposes "bench"; the parent connects and opens the context
// on a thread of its own the first time it asks for a sender or receiver (after the peer said
// "ready"). Each side's context body opens the stream (inbound ring of the run's ring_bytes,
// capacity ring_bytes / message size, on_full = block: backpressure like every other transport,
// never StreamOverrun), hands it to the harness's thread and waits, cancellably, until the Link
// is destroyed; the stream is used from that thread meanwhile (a MsgStream belongs to one thread
// at a time, and only that thread touches it).
//
// Modes set StreamOptions::spin_before_sleep: spin never sleeps (Duration::max(): the stream's
// waits watch the ring busy, as the raw ring's busy_spin does), block uses the actor's default
// (50 us of watching, then a futex). The actors' own threads keep the default in both modes: a
// runtime thread that spun too would share the pinned CPU with the harness's thread.
//
// Thread-safety: one Sender and one Receiver per side, both on the harness's thread.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "shmctx/context.hpp"
#include "transport.hpp"

namespace shmctx::bench {

enum class StreamRead : std::uint8_t { receive, drain, batch };

/// The actors, the context thread and the hand-over of the stream (stream_transport.cpp).
struct StreamRun;

/// Waits (bounded by the run guard) until the context body handed over its stream.
MsgStream& stream_of(StreamRun& run, const RunGuard& guard);

template <StreamRead R>
struct ShmctxStream {
    static constexpr std::string_view kName = R == StreamRead::receive ? "shmctx-stream"
                                              : R == StreamRead::drain ? "shmctx-stream-drain"
                                                                       : "shmctx-stream-batch";

    class Sender {
    public:
        Sender(StreamRun* run, const ChannelSpec& spec) : run_(run), guard_(RunGuard::of(spec)) {
            if constexpr (R == StreamRead::batch) {
                slot_bytes_ = spec.msg_bytes;
                batch_ = std::max<std::size_t>(1, spec.batch);
                buffer_.resize(slot_bytes_ * batch_);
                views_.reserve(batch_);
            }
        }
        void send(const std::byte* p, std::size_t n) {
            if constexpr (R == StreamRead::batch) {
                std::byte* slot = buffer_.data() + views_.size() * slot_bytes_;
                std::memcpy(slot, p, std::min(n, slot_bytes_));
                views_.emplace_back(std::span<const std::byte>(slot, std::min(n, slot_bytes_)));
                if (views_.size() == batch_) flush();
            } else {
                stream_of(*run_, guard_).send(PayloadView(std::span<const std::byte>(p, n)));
            }
        }
        void flush() {
            if constexpr (R == StreamRead::batch) {
                if (views_.empty()) return;
                stream_of(*run_, guard_).send_many(views_);
                views_.clear();
            }
        }

    private:
        StreamRun* run_;
        RunGuard guard_;
        std::size_t slot_bytes_ = 0;  // batch: one message's room in buffer_
        std::size_t batch_ = 1;
        std::vector<std::byte> buffer_;
        std::vector<PayloadView> views_;  // the messages in buffer_ not sent yet
    };

    class Receiver {
    public:
        Receiver(StreamRun* run, const ChannelSpec& spec)
            : run_(run), batch_(spec.read_batch), guard_(RunGuard::of(spec)) {}
        template <class F>
        void receive(F&& on_message) {
            MsgStream& s = stream_of(*run_, guard_);
            if constexpr (R == StreamRead::receive) {
                const Message m = s.receive();
                on_message(m.bytes().data(), m.bytes().size());
            } else {
                (void)s.drain(
                    [&](const Message& m) { on_message(m.bytes().data(), m.bytes().size()); },
                    batch_);
            }
        }

    private:
        StreamRun* run_;
        std::size_t batch_;
        RunGuard guard_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec);
        static Link open(const ChannelSpec& spec);
        Link(Link&&) noexcept;
        Link& operator=(Link&&) = delete;
        ~Link();
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir) { return Sender(run_.get(), spec_); }
        Receiver receiver(Dir) { return Receiver(run_.get(), spec_); }

    private:
        explicit Link(const ChannelSpec& spec);
        ChannelSpec spec_;
        std::unique_ptr<StreamRun> run_;
    };
};

using ShmctxStreamReceive = ShmctxStream<StreamRead::receive>;
using ShmctxStreamDrain = ShmctxStream<StreamRead::drain>;
using ShmctxStreamBatch = ShmctxStream<StreamRead::batch>;

}  // namespace shmctx::bench
