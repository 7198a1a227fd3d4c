// The minimal fixed-slot SPSC ring: the harness's physical-limit proxy (DESIGN.md §8).
//
// Deliberately the least a correct cross-process SPSC queue can do: fixed-size slots sized for
// the run's message size (a size class, a multiple of 64 bytes, no per-slot header: all
// messages of a run have one size, as in a queue of a fixed element type), head and tail on
// separate 128-byte blocks, each side caching the other's index and reloading it only when it runs
// dry or full. Unbatched, the producer publishes its tail and the consumer its head after every
// message; batched (ChannelSpec::batch > 1) each publishes once per batch of up to `batch`.
// Blocking mode uses the wake protocol of shmctx/shm/wake.hpp (the consumer waits on
// `consumer_cell` for data, the producer on `producer_cell` for space); spin mode never calls
// wake_cell, so it costs nothing there.
//
// Segment `<name>.min` (all offsets from the mapping's start):
//
//   0      MinimalRingHeader   (128 B, immutable after create)
//   128    MinimalRingControl  direction a_to_b (640 B)
//   768    MinimalRingControl  direction b_to_a (640 B)
//   1408   slots a_to_b        slot_count * slot_bytes   (each slot: the message, no header)
//   ...    slots b_to_a
//
//   MinimalRingControl:   0 tail (u64)                 hot, producer
//                       128 head (u64)                 hot, consumer
//                       256 consumer_cell (WakeCell)   cold: written when the consumer blocks
//                       384 producer_cell (WakeCell)   cold: written when the producer blocks
//                       512 wake[0] (consumer's WakeSlot)  576 wake[1] (producer's)
//
// The cells sit on their own lines so that a waker's check of the cell (every publish in block
// mode) does not pull the line its peer writes on every message.
//
// Writer table: header — creator, before the peer is spawned; tail, producer_cell, slots —
// producer; head, consumer_cell — consumer; wake[i].counter — any waker.
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "shmctx/errors.hpp"
#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "transport.hpp"

namespace shmctx::bench {

inline constexpr std::uint64_t kMinimalRingMagic = 0x676e69722d6e696dULL;  // "min-ring"
inline constexpr std::uint32_t kMinimalRingVersion = 1;

struct MinimalRingHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t slot_bytes;  ///< stride, a multiple of kCacheLine
    std::uint64_t slot_count;  ///< a power of two
    std::byte reserved[128 - 24];
};
static_assert(sizeof(MinimalRingHeader) == 128);
static_assert(std::is_standard_layout_v<MinimalRingHeader> &&
              std::is_trivially_destructible_v<MinimalRingHeader>);

struct MinimalRingControl {
    std::atomic<std::uint64_t> tail;  ///< producer: messages published
    std::byte pad0[128 - 8];
    std::atomic<std::uint64_t> head;  ///< consumer: messages consumed
    std::byte pad1[128 - 8];
    shm::WakeCell consumer_cell;  ///< consumer advertises here while it waits for data
    std::byte pad2[128 - 8];
    shm::WakeCell producer_cell;  ///< producer advertises here while it waits for space
    std::byte pad3[128 - 8];
    shm::WakeSlot wake[2];  ///< [0] the consumer's wake slot, [1] the producer's
};
static_assert(sizeof(MinimalRingControl) == 640);
static_assert(offsetof(MinimalRingControl, head) == 128);
static_assert(offsetof(MinimalRingControl, consumer_cell) == 256);
static_assert(offsetof(MinimalRingControl, producer_cell) == 384);
static_assert(offsetof(MinimalRingControl, wake) == 512);
static_assert(std::is_standard_layout_v<MinimalRingControl> &&
              std::is_trivially_destructible_v<MinimalRingControl>);

inline constexpr std::size_t kMinimalControlOffset = sizeof(MinimalRingHeader);
inline constexpr std::size_t kMinimalSlotsOffset =
    kMinimalControlOffset + 2 * sizeof(MinimalRingControl);
static_assert(kMinimalSlotsOffset % shm::kCacheLine == 0);

struct MinimalRing {
    static constexpr std::string_view kName = "minimal";

    /// The geometry both sides derive from the spec.
    struct Geometry {
        std::uint32_t slot_bytes;
        std::uint64_t slot_count;
        std::size_t total_bytes;
        static Geometry of(const ChannelSpec& spec) {
            // No per-slot header: every message of a run has the same size (a fixed-size
            // element queue), so a 64-byte message fills exactly one cache line.
            const std::size_t stride = shm::align_up(spec.msg_bytes, shm::kCacheLine);
            const std::uint64_t count =
                std::max<std::uint64_t>(2, std::bit_floor(spec.ring_bytes / stride));
            return {static_cast<std::uint32_t>(stride), count,
                    kMinimalSlotsOffset + 2 * count * stride};
        }
    };

    /// One direction as seen by one side: the control block, the slot array and the wake table.
    struct View {
        MinimalRingControl* control;
        std::byte* slots;
        std::uint32_t slot_bytes;
        std::uint64_t slot_count;
        shm::WakeTable table;
    };

    class Sender {
    public:
        Sender(View v, const ChannelSpec& spec)
            : v_(v),
              mask_(v.slot_count - 1),
              msg_bytes_(spec.msg_bytes),
              batch_(std::max<std::uint32_t>(1, spec.batch)),
              mode_(spec.mode),
              guard_(RunGuard::of(spec)),
              waiter_(v_.table, 1) {
            // relaxed: nothing was published yet; the consumer only reads tail.
            tail_ = v_.control->tail.load(std::memory_order::relaxed);
            cached_head_ = load_head();
        }

        void send(const std::byte* p, std::size_t n) {
            if (n != msg_bytes_) throw std::length_error("minimal ring: message of another size");
            if (tail_ - cached_head_ == v_.slot_count) [[unlikely]]
                wait_for_space();
            std::byte* slot = v_.slots + (tail_ & mask_) * v_.slot_bytes;
            std::memcpy(slot, p, n);
            ++tail_;
            if (++unpublished_ >= batch_) publish();
        }
        void flush() {
            if (unpublished_ != 0) publish();
        }

    private:
        void publish() {
            // [min.publish] pairs with [min.observe] in Receiver::load_tail: the slots written
            // before are visible to a consumer that sees this tail.
            v_.control->tail.store(tail_, std::memory_order::release);
            unpublished_ = 0;
            if (mode_ == Mode::block &&
                shm::wake_cell(v_.control->consumer_cell, v_.table) == shm::WakeResult::bad_slot) {
                throw ProtocolError("minimal ring: consumer advertised a bad wake slot");
            }
        }
        std::uint64_t load_head() const {
            // [min.free] pairs with [min.release] in Receiver::receive: slots below head are
            // no longer read. Read once, validated, only the local used.
            const std::uint64_t h = v_.control->head.load(std::memory_order::acquire);
            if (h > tail_ || tail_ - h > v_.slot_count)
                throw ProtocolError("minimal ring: head " + std::to_string(h) +
                                    " outside [tail - " + std::to_string(v_.slot_count) +
                                    ", tail " + std::to_string(tail_) + "]");
            return h;
        }
        void wait_for_space() {
            flush();  // a batched producer must publish before it waits, or both sides wait
            auto has_space = [this] {
                cached_head_ = load_head();
                return tail_ - cached_head_ < v_.slot_count;
            };
            if (mode_ == Mode::spin) {
                spin_until(has_space, guard_, "minimal ring: consumer stalled (ring full)");
            } else if (waiter_.wait(v_.control->producer_cell, has_space, guard_.deadline,
                                    guard_.stop) != shm::WaitStatus::ready) {
                wait_failed(guard_, "minimal ring: consumer stalled (ring full)");
            }
        }

        View v_;
        std::uint64_t mask_;
        std::size_t msg_bytes_;
        std::uint32_t batch_;
        std::uint32_t unpublished_ = 0;
        Mode mode_;
        RunGuard guard_;
        shm::Waiter waiter_;
        std::uint64_t tail_ = 0;
        std::uint64_t cached_head_ = 0;
    };

    class Receiver {
    public:
        Receiver(View v, const ChannelSpec& spec)
            : v_(v),
              mask_(v.slot_count - 1),
              msg_bytes_(spec.msg_bytes),
              batch_(std::max<std::uint32_t>(1, spec.read_batch)),
              mode_(spec.mode),
              guard_(RunGuard::of(spec)),
              waiter_(v_.table, 0) {
            // relaxed: only this side writes head.
            head_ = v_.control->head.load(std::memory_order::relaxed);
            cached_tail_ = head_;
        }

        template <class F>
        void receive(F&& on_message) {
            if (cached_tail_ == head_) wait_for_data();
            const std::uint64_t take = std::min<std::uint64_t>(cached_tail_ - head_, batch_);
            for (std::uint64_t i = 0; i < take; ++i) {
                const std::byte* slot = v_.slots + ((head_ + i) & mask_) * v_.slot_bytes;
                on_message(slot, msg_bytes_);
            }
            head_ += take;
            // [min.release] pairs with [min.free] in Sender::load_head: we are done with the
            // slots below head_.
            v_.control->head.store(head_, std::memory_order::release);
            if (mode_ == Mode::block &&
                shm::wake_cell(v_.control->producer_cell, v_.table) == shm::WakeResult::bad_slot) {
                throw ProtocolError("minimal ring: producer advertised a bad wake slot");
            }
        }

    private:
        bool load_tail() {
            // [min.observe] pairs with [min.publish] in Sender::publish.
            const std::uint64_t t = v_.control->tail.load(std::memory_order::acquire);
            if (t < head_ || t - head_ > v_.slot_count)
                throw ProtocolError("minimal ring: tail " + std::to_string(t) + " outside [head " +
                                    std::to_string(head_) + ", head + " +
                                    std::to_string(v_.slot_count) + "]");
            cached_tail_ = t;
            return t != head_;
        }
        void wait_for_data() {
            auto ready = [this] { return load_tail(); };
            if (mode_ == Mode::spin) {
                spin_until(ready, guard_, "minimal ring: producer stalled (ring empty)");
            } else if (waiter_.wait(v_.control->consumer_cell, ready, guard_.deadline,
                                    guard_.stop) != shm::WaitStatus::ready) {
                wait_failed(guard_, "minimal ring: producer stalled (ring empty)");
            }
        }

        View v_;
        std::uint64_t mask_;
        std::size_t msg_bytes_;
        std::uint32_t batch_;
        Mode mode_;
        RunGuard guard_;
        shm::Waiter waiter_;
        std::uint64_t head_ = 0;
        std::uint64_t cached_tail_ = 0;
    };

    /// Both cells start as busy_spin ("nobody waits"), as in the shmctx ring: a side pays the
    /// wake fence only after its peer has really blocked once (Waiter bounds the first wait
    /// after a switch away from busy_spin, see wake.hpp).
    static void init_cells(MinimalRingControl& c) noexcept {
        constexpr auto spin = static_cast<std::uint32_t>(shm::WaitMode::busy_spin);
        // relaxed: before the peer exists (spawned after create) or in a single thread.
        c.producer_cell.mode.store(spin, std::memory_order::relaxed);
        c.consumer_cell.mode.store(spin, std::memory_order::relaxed);
    }

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            const Geometry g = Geometry::of(spec);
            const std::string name = spec.name + ".min";
            Link link(spec, shm::Segment::create(name, g.total_bytes), OwnedShmName(name));
            std::byte* base = link.segment_.data();
            auto* header = new (base) MinimalRingHeader{};
            header->magic = kMinimalRingMagic;
            header->version = kMinimalRingVersion;
            header->slot_bytes = g.slot_bytes;
            header->slot_count = g.slot_count;
            for (std::size_t d = 0; d < 2; ++d) {
                auto* c = new (base + kMinimalControlOffset + d * sizeof(MinimalRingControl))
                    MinimalRingControl{};
                init_cells(*c);
            }
            link.geometry_ = g;
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            const Geometry g = Geometry::of(spec);
            Link link(spec, shm::Segment::open(spec.name + ".min", {}, g.total_bytes), {});
            const auto* header =
                std::launder(reinterpret_cast<const MinimalRingHeader*>(link.segment_.data()));
            if (header->magic != kMinimalRingMagic || header->version != kMinimalRingVersion ||
                header->slot_bytes != g.slot_bytes || header->slot_count != g.slot_count) {
                throw LayoutError("minimal ring: header does not match the run's parameters");
            }
            link.geometry_ = g;
            return link;
        }
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir d) { return Sender(view(d), spec_); }
        Receiver receiver(Dir d) { return Receiver(view(d), spec_); }

    private:
        Link(const ChannelSpec& spec, shm::Segment segment, OwnedShmName owned)
            : spec_(spec), segment_(std::move(segment)), owned_(std::move(owned)) {}
        View view(Dir d) {
            const auto i = static_cast<std::size_t>(d);
            std::byte* base = segment_.data();
            auto* control = std::launder(reinterpret_cast<MinimalRingControl*>(
                base + kMinimalControlOffset + i * sizeof(MinimalRingControl)));
            std::byte* wake = reinterpret_cast<std::byte*>(&control->wake[0]);
            return {control,
                    base + kMinimalSlotsOffset + i * geometry_.slot_count * geometry_.slot_bytes,
                    geometry_.slot_bytes, geometry_.slot_count,
                    shm::WakeTable(std::span<std::byte>(wake, sizeof control->wake))};
        }

        ChannelSpec spec_;
        shm::Segment segment_;
        OwnedShmName owned_;
        Geometry geometry_{};
    };
};

}  // namespace shmctx::bench
