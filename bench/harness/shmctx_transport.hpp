// The shmctx ring (include/shmctx/shm/ring.hpp) as a harness transport: raw-byte payloads
// (RawCodec), or FlatBuffers payloads (FlatBuffersCodec, shmctx_fb_codec.hpp).
//
// Segment `<name>.ring`:
//
//   0     wake table, 4 WakeSlots (256 B): [0] a_to_b consumer (peer)    [1] a_to_b producer
//   (parent)
//                                          [2] b_to_a consumer (parent)  [3] b_to_a producer (peer)
//   256   ring region a_to_b   ring_region_bytes(data_bytes)  (RingWriter::create by the parent)
//   ...   ring region b_to_a   (RingWriter::create by the peer, in Link::open, before "ready")
//
// In the library each actor's wake slots live in its own actor segment; one shared table is the
// same protocol with less setup. Variants (ChannelSpec): batch == 1 publishes every record
// (Publish::now), batch > 1 defers and publishes once per batch; read_batch == 1 uses
// try_read/release per record, read_batch > 1 uses drain (one head publish per batch).
// Spin mode waits with WaitMode::busy_spin, block mode with WaitMode::block (spin, then futex).
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "shmctx/errors.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "transport.hpp"

namespace shmctx::bench {

/// Raw-byte payloads: the message is the record payload.
struct RawCodec {
    struct Encoder {
        explicit Encoder(const ChannelSpec&) {}
        std::span<const std::byte> encode(const std::byte* p, std::size_t n) const noexcept {
            return {p, n};
        }
    };
    template <class F>
    static void decode(std::span<const std::byte> payload, F& on_message) {
        on_message(payload.data(), payload.size());
    }
};

/// The shmctx ring carrying messages encoded by `Codec` (RawCodec here; FlatBuffersCodec in
/// shmctx_fb_codec.hpp): Codec::Encoder::encode(p, n) -> bytes to write,
/// Codec::decode(payload, f) verifies and calls f(message, size).
template <class Codec>
struct ShmctxRingT {
    static constexpr std::string_view kName = "shmctx";
    static constexpr std::uint16_t kKind = 1;
    static constexpr std::size_t kWakeBytes = 4 * sizeof(shm::WakeSlot);

    static std::size_t data_bytes_for(const ChannelSpec& spec) {
        const std::size_t needed = std::bit_ceil(4 * shm::ring_record_bytes(spec.msg_bytes));
        const std::size_t asked = std::bit_floor(std::max(spec.ring_bytes, shm::kMinRingDataBytes));
        return std::max({needed, asked, shm::kMinRingDataBytes});
    }
    static std::size_t region_offset(const ChannelSpec& spec, Dir d) {
        return kWakeBytes +
               static_cast<std::size_t>(d) * shm::ring_region_bytes(data_bytes_for(spec));
    }
    static shm::WaitPolicy policy(Mode m) {
        return {m == Mode::spin ? shm::WaitMode::busy_spin : shm::WaitMode::block};
    }
    [[noreturn]] static void broken(const char* side, std::string_view status,
                                    std::string_view text) {
        throw ProtocolError(std::string("shmctx ring ") + side + ": " + std::string(status) + ": " +
                            std::string(text));
    }

    class Sender {
    public:
        Sender(shm::RingWriter writer, const shm::WakeTable& table, std::uint32_t slot,
               const ChannelSpec& spec)
            : w_(std::move(writer)),
              encoder_(spec),
              waiter_(table, slot),
              policy_(policy(spec.mode)),
              deferred_(spec.batch > 1),
              batch_(std::max<std::uint32_t>(1, spec.batch)),
              guard_(RunGuard::of(spec)) {}

        void send(const std::byte* p, std::size_t n) {
            const std::span<const std::byte> payload = encoder_.encode(p, n);
            for (;;) {
                const shm::WriteResult r = w_.try_write(
                    kKind, payload, 0, deferred_ ? shm::Publish::deferred : shm::Publish::now);
                if (r == shm::WriteResult::ok) [[likely]] {
                    if (deferred_ && ++unpublished_ >= batch_) flush();
                    return;
                }
                if (r != shm::WriteResult::full_msgs && r != shm::WriteResult::full_bytes)
                    broken("writer", shm::to_string(r), w_.error_text());
                flush();  // deferred records must be visible before we wait for space
                if (w_.wait_writable(payload.size(), waiter_, guard_.deadline, guard_.stop,
                                     policy_) != shm::WaitStatus::ready)
                    wait_failed(guard_, "shmctx ring: consumer stalled (ring full)");
            }
        }
        void flush() {
            if (unpublished_ == 0) return;
            unpublished_ = 0;
            if (const shm::WriteResult r = w_.publish(); r != shm::WriteResult::ok)
                broken("writer", shm::to_string(r), w_.error_text());
        }

    private:
        shm::RingWriter w_;
        typename Codec::Encoder encoder_;
        shm::Waiter waiter_;
        shm::WaitPolicy policy_;
        bool deferred_;
        std::uint32_t batch_;
        std::uint32_t unpublished_ = 0;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(shm::RingReader reader, const shm::WakeTable& table, std::uint32_t slot,
                 const ChannelSpec& spec)
            : r_(std::move(reader)),
              waiter_(table, slot),
              policy_(policy(spec.mode)),
              read_batch_(std::max<std::uint32_t>(1, spec.read_batch)),
              guard_(RunGuard::of(spec)) {}

        template <class F>
        void receive(F&& on_message) {
            for (;;) {
                if (read_batch_ == 1) {
                    shm::RecordView v;
                    const shm::ReadResult rr = r_.try_read(v);
                    if (rr == shm::ReadResult::ok) [[likely]] {
                        deliver(v, on_message);
                        r_.release();
                        return;
                    }
                    if (rr != shm::ReadResult::empty)
                        broken("reader", shm::to_string(rr), r_.error_text());
                } else {
                    const auto d = r_.drain(
                        [&](const shm::RecordView& v) { deliver(v, on_message); }, read_batch_);
                    if (d.count > 0) [[likely]]
                        return;
                    if (d.status != shm::ReadResult::empty)
                        broken("reader", shm::to_string(d.status), r_.error_text());
                }
                if (r_.wait_readable(waiter_, guard_.deadline, guard_.stop, policy_) !=
                    shm::WaitStatus::ready)
                    wait_failed(guard_, "shmctx ring: producer stalled (ring empty)");
            }
        }

    private:
        template <class F>
        static void deliver(const shm::RecordView& v, F& on_message) {
            if (v.kind != kKind) [[unlikely]]
                throw CheckFailed("shmctx ring: record kind " + std::to_string(v.kind));
            Codec::decode(v.payload, on_message);
        }
        shm::RingReader r_;
        shm::Waiter waiter_;
        shm::WaitPolicy policy_;
        std::uint32_t read_batch_;
        RunGuard guard_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            const std::string name = spec.name + ".ring";
            Link link(spec, shm::Segment::create(name, total_bytes(spec)), OwnedShmName(name),
                      true);
            link.writer_ = link.make_writer(Dir::a_to_b);
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            Link link(spec, shm::Segment::open(spec.name + ".ring", {}, total_bytes(spec)), {},
                      false);
            link.writer_ = link.make_writer(Dir::b_to_a);
            return link;
        }
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir d) {
            if (!writer_ || d != (parent_ ? Dir::a_to_b : Dir::b_to_a))
                throw std::logic_error("shmctx ring: this side does not produce in that direction");
            Sender s(std::move(*writer_), table_, producer_slot(d), spec_);
            writer_.reset();
            return s;
        }
        /// The other side must have created this direction's writer (before it said "ready").
        Receiver receiver(Dir d) {
            return Receiver(shm::RingReader::attach(region(d), 0, table_), table_, consumer_slot(d),
                            spec_);
        }

    private:
        Link(const ChannelSpec& spec, shm::Segment seg, OwnedShmName owned, bool parent)
            : spec_(spec),
              segment_(std::move(seg)),
              owned_(std::move(owned)),
              parent_(parent),
              table_(std::span<std::byte>(segment_.data(), kWakeBytes)) {}
        static std::size_t total_bytes(const ChannelSpec& spec) {
            return kWakeBytes + 2 * shm::ring_region_bytes(data_bytes_for(spec));
        }
        static std::uint32_t consumer_slot(Dir d) { return d == Dir::a_to_b ? 0 : 2; }
        static std::uint32_t producer_slot(Dir d) { return d == Dir::a_to_b ? 1 : 3; }
        std::span<std::byte> region(Dir d) {
            return {segment_.data() + region_offset(spec_, d),
                    shm::ring_region_bytes(data_bytes_for(spec_))};
        }
        shm::RingWriter make_writer(Dir d) {
            shm::RingParams params;
            params.data_bytes = data_bytes_for(spec_);
            params.generation = 0;
            // Every record takes at least 16 bytes: the byte capacity is the binding limit.
            params.capacity_msgs = static_cast<std::uint32_t>(
                std::min<std::size_t>(params.data_bytes / shm::kRecordAlign, UINT32_MAX));
            return shm::RingWriter::create(region(d), params, table_);
        }

        ChannelSpec spec_;
        shm::Segment segment_;
        OwnedShmName owned_;
        bool parent_;
        shm::WakeTable table_;
        std::optional<shm::RingWriter> writer_;
    };
};

using ShmctxRing = ShmctxRingT<RawCodec>;

}  // namespace shmctx::bench
