#include "core/link.hpp"

#include <cstring>
#include <new>
#include <utility>

#include "core/cancel_scope.hpp"  // NonBlockingThreadMark
#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::detail {

namespace {

/// Where the first carve of every link arena lands (our control ring): the peer computes it
/// rather than reading it from anywhere it would have to trust.
shm::CarveDescriptor control_descriptor() noexcept {
    return {shm::kArenaCarveBase + shm::kCarveHeaderBytes,
            shm::ring_region_bytes(kControlRingDataBytes), 1};
}

shm::Arena create_arena(const shm::Names& names, const LinkSettings& s, const Uuid& peer) {
    return shm::Arena::create(names, s.self.uuid, peer, shm::ArenaOptions{s.arena_bytes, s.mode});
}

shm::RingWriter create_control_ring(shm::Arena& arena, const shm::WakeTable& peer_wakes) {
    const shm::Carve carve = arena.carve(shm::ring_region_bytes(kControlRingDataBytes));
    if (carve.descriptor != control_descriptor()) {
        // Only a fresh arena's first carve can be the control ring.
        throw ProtocolError("link arena '" + arena.name() +
                            "': the control ring is not the first carve");
    }
    shm::RingParams params;
    params.data_bytes = kControlRingDataBytes;
    params.generation = carve.descriptor.generation;
    // The control ring is bounded by bytes only: every control record is small and the
    // consumer (a control loop) never holds one.
    params.capacity_msgs = std::uint32_t{1} << 30;
    params.allow_overruns = false;
    return shm::RingWriter::create(carve.body, params, peer_wakes);
}

}  // namespace

const char* to_string(LinkState s) noexcept {
    switch (s) {
        case LinkState::awaiting_peer:
            return "awaiting-peer";
        case LinkState::up:
            return "up";
        case LinkState::closed:
            return "closed";
        case LinkState::dead:
            return "dead";
        case LinkState::failed:
            return "failed";
    }
    return "unknown";
}

Link::Link(const shm::Names& names, const LinkSettings& settings, shm::PeerActor peer, Uid peer_uid)
    : self_(settings.self),
      peer_(std::move(peer)),
      peer_uid_(std::move(peer_uid)),
      peer_wakes_(peer_.segment().wake_table()),
      arena_(create_arena(names, settings, peer_uid_.uuid)),
      out_(create_control_ring(arena_, peer_wakes_)),
      encoder_(settings.max_control_record_bytes) {
    (void)SHMCTX_FAULT_POINT("link.before_open");  // kill matrix: arena made, no LinkOpen yet
    // LinkOpen is the first record; the ring is empty, so it fits. The fault point makes it
    // name the next protocol version (tests of the check in ActorCore::on_link_open, the one
    // a peer with our segment and arena versions still meets).
    const std::uint32_t protocol =
        SHMCTX_FAULT_POINT("link.open_version") ? shm::kProtocolVersion + 1 : shm::kProtocolVersion;
    const auto open = encoder_.link_open(wire::UidRef{settings.self.name, settings.self.uuid},
                                         shm::kLayoutVersion, protocol);
    if (write_record(open, shm::Publish::now) != shm::WriteResult::ok) {
        throw ProtocolError("link to " + peer_uid_.to_string() + ": cannot write LinkOpen");
    }
}

Link::~Link() = default;

std::exception_ptr Link::failure() const {
    const std::lock_guard lock(state_mu_);
    return failure_ ? failure_ : out_failure_;
}

std::exception_ptr Link::out_failure() const {
    // [link.out_failed] pairs with the store in break_out_locked(): out_failure_ is set before.
    if (!out_failed_.load(std::memory_order::acquire)) return nullptr;
    const std::lock_guard lock(state_mu_);
    return out_failure_;
}

void Link::break_out_locked(shm::WriteResult why) {
    out_broken_ = true;
    if (why != shm::WriteResult::protocol_error) return;
    {
        const std::lock_guard lock(state_mu_);
        if (out_failure_) return;
        try {
            out_failure_ =
                std::make_exception_ptr(ProtocolError("control ring to " + peer_uid_.to_string() +
                                                      ": " + std::string(out_.error_text())));
        } catch (...) {
            out_failure_ = std::current_exception();  // bad_alloc: still a failure
        }
    }
    // [link.out_failed] pairs with the load in out_failure().
    out_failed_.store(true, std::memory_order::release);
    if (on_outbox_) on_outbox_();  // the control loop fails the link (service_link)
}

bool Link::finish(LinkState final_state, std::exception_ptr why) {
    {
        const std::lock_guard lock(state_mu_);
        const LinkState now = state_.load(std::memory_order::relaxed);  // under state_mu_
        if (now == LinkState::closed || now == LinkState::dead || now == LinkState::failed) {
            return false;
        }
        failure_ = std::move(why);
        // [link.final] pairs with [link.final] in state(): failure_ is set before the state.
        state_.store(final_state, std::memory_order::release);
    }
    {
        const std::lock_guard lock(out_mu_);
        out_broken_ = true;
        outbox_.clear();
        outbox_depth_.store(0, std::memory_order::relaxed);  // relaxed: a statistic
        // A live peer learns of the end from this even when its control ring had no room
        // for our LinkClose (a stalled peer, or one we failed for a protocol error).
        if (final_state != LinkState::dead) out_.close();
    }
    {
        // Nobody will attach our arena again: its name goes now, while contexts and portals
        // may still hold the link (and its mappings) for a while.
        const std::lock_guard lock(arena_mu_);
        arena_.unlink();
    }
    return true;
}

bool Link::attach_peer(const shm::Names& names) {
    if (peer_attached()) return true;
    std::optional<shm::ArenaView> view =
        shm::ArenaView::try_open(names, peer_uid_.uuid, self_.uuid);
    if (!view || view->inode() == ignored_peer_arena_) return false;
    const shm::CarveDescriptor d = control_descriptor();
    if (!view->carved(d)) return false;  // the owner is still carving its control ring
    const std::span<std::byte> body = view->attach(d);
    // The ring header is initialised after the carve is published; its magic is stored last
    // ([ring.init]): zero means "not yet", anything else RingReader::attach validates.
    const auto* ring = std::launder(reinterpret_cast<const shm::RingHeader*>(body.data()));
    // [ring.init] pairs with [ring.init] in RingWriter::create.
    if (ring->immutable.magic.load(std::memory_order::acquire) == 0) return false;
    shm::RingReader reader = shm::RingReader::attach(body, d.generation, peer_wakes_,
                                                     shm::RingReaderOptions{kControlRecordKind});
    // Our control loop is the only reader; it advertises the doorbell while it sleeps.
    reader.advertise_wake_slot(std::nullopt);
    peer_arena_.emplace(std::move(*view));
    {
        const std::lock_guard lock(in_mu_);
        in_.emplace(std::move(reader));
    }
    // [link.attach] pairs with [link.attach] in peer_attached().
    attached_.store(true, std::memory_order::release);
    return true;
}

bool Link::flush() {
    const std::lock_guard lock(out_mu_);
    while (!outbox_.empty() && !out_broken_) {
        const std::vector<std::byte>& record = outbox_.front();
        const shm::WriteResult r = write_record(record, shm::Publish::now);
        if (r == shm::WriteResult::full_bytes || r == shm::WriteResult::full_msgs) {
            // Wake us (slot 0) when the peer frees space; re-check once after advertising
            // so that a release between the failed write and the advertisement is not lost.
            out_.advertise_space_waiter(doorbell_slot_);
            const shm::WriteResult again = write_record(record, shm::Publish::now);
            if (again == shm::WriteResult::protocol_error) break_out_locked(again);
            if (again != shm::WriteResult::ok) return false;
        } else if (r != shm::WriteResult::ok) {
            break_out_locked(r);
            return false;
        }
        outbox_.pop_front();
        outbox_depth_.store(outbox_.size(), std::memory_order::relaxed);  // relaxed: a statistic
    }
    out_.advertise_space_waiter(std::nullopt);
    return outbox_.empty();
}

shm::WriteResult Link::write_record(std::span<const std::byte> record, shm::Publish publish) {
    if (!shm::fault_points_enabled() || !shm::fault_point_armed("control.half_written")) {
        return out_.try_write(kControlRecordKind, record, 0, publish);
    } else {
        // Two halves, so that the kill matrix can kill us with half a control record written
        // (claimed, not committed): the peer must never see it. Only when that fault is set,
        // so that the test builds run the production path everywhere else.
        const shm::RingClaim claim = out_.try_claim(record.size());
        if (!claim.ok()) return claim.status;
        const std::size_t half = record.size() / 2;
        std::memcpy(claim.buffer.data(), record.data(), half);
        (void)SHMCTX_FAULT_POINT("control.half_written");
        std::memcpy(claim.buffer.data() + half, record.data() + half, record.size() - half);
        return out_.commit(claim, record.size(), kControlRecordKind, 0, publish);
    }
}

bool Link::write_locked(std::span<const std::byte> record, shm::Publish publish) {
    if (out_broken_) return false;
    if (outbox_.empty()) {
        const shm::WriteResult r = write_record(record, publish);
        if (r == shm::WriteResult::ok) return true;
        if (r != shm::WriteResult::full_bytes && r != shm::WriteResult::full_msgs) {
            // too_large cannot happen (records are capped far below a quarter of the ring);
            // protocol_error / consumer_closed: the peer broke or abandoned the ring.
            break_out_locked(r);
            return false;
        }
    }
    // FIFO: behind whatever is queued already. The control loop flushes it.
    outbox_.emplace_back(record.begin(), record.end());
    outbox_total_.fetch_add(1, std::memory_order::relaxed);           // relaxed: a statistic
    outbox_depth_.store(outbox_.size(), std::memory_order::relaxed);  // relaxed: a statistic
    if (counters_ != nullptr) counters_->add(shm::ActorCounter::outbox_queued);
    return true;
}

shm::Carve Link::carve(std::size_t bytes) {
    const std::lock_guard lock(arena_mu_);
    (void)arena_.collect(state() == LinkState::dead);
    return arena_.carve(bytes);
}

void Link::release(const shm::CarveDescriptor& descriptor) noexcept {
    const std::lock_guard lock(arena_mu_);
    try {
        arena_.release(descriptor);
    } catch (const std::exception&) {
        // A descriptor we did not hand out: a bug of ours, never the peer's doing; keep going.
    }
}

void Link::wake_reader_soon(std::uint64_t published) noexcept {
    if (!NonBlockingThreadMark::active()) {
        const Clock::time_point until = Clock::now() + kWakeGrace;
        // Both ways out are safe: a reader that withdrew its advertisement reads (or, leaving,
        // advertises again and looks after its fence: it sees our tail, stored before our own
        // fence in consumer_waits_for), and one that released past `published` has our record.
        for (unsigned turn = 1;; ++turn) {
            if (!out_.consumer_waits_for(published)) return;
            if ((turn % 16U) == 0 && Clock::now() >= until) break;
            shm::cpu_relax();
        }
    }
    const std::lock_guard lock(out_mu_);
    // [wake.storeload] + ring, as publish() would have done at once.
    const shm::WriteResult r = out_.wake_consumer();
    if (r != shm::WriteResult::ok) break_out_locked(r);
}

void Link::advertise_doorbell(bool sleeping) noexcept {
    if (!peer_attached()) return;
    // No reader lock: advertise_wake_slot() stores only the shared cell's words (in_ itself is
    // set once, before attached_), so it may run beside a thread that reads records.
    in_->advertise_wake_slot(sleeping ? std::optional<std::uint32_t>(doorbell_slot_)
                                      : std::nullopt);
}

bool Link::control_readable() const noexcept {
    // The shared words only (no lock): whoever reads takes the lock. After the doorbell was
    // advertised ([wake.storeload] fence in advertise_wake_slot), a record the producer
    // published before it could see the advertisement shows here as tail != head.
    // A closed ring counts too: its close must be read like a record ([ring.producer_close]
    // in RingReader::producer_closed), or a close landing before the doorbell was advertised
    // would wake nobody.
    return peer_attached() && (in_->maybe_readable() || in_->producer_closed());
}

}  // namespace shmctx::detail
