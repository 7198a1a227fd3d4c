// Poller (include/shmctx/poller.hpp; docs/protocol.md §10.4).
//
// One wait: borrow a wake slot of the streams' actor; advertise it in every stream
// (ContextState::poll_advertise: the inbound data cell, which producers ring after they
// publish, and the context's waiting_slot_, which notify() rings after a state change); then
// Waiter::wait re-checks every stream after its [wake.storeload] fence, so a publish or an
// event after the check rings the slot: no lost wake-up. A data cell that just left busy_spin
// may have a producer that read the old mode: the first sleep is bounded by kModeSwitchWait.
#include "shmctx/poller.hpp"

#include <algorithm>
#include <atomic>
#include <optional>

#include "core/actor_core.hpp"
#include "core/cancel_scope.hpp"
#include "core/context_state.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx {

void Poller::add(MsgStream& stream) {
    detail::ContextState& state = stream.state("Poller::add");  // not a moved-from stream
    if (std::find(streams_.begin(), streams_.end(), &stream) != streams_.end()) {
        throw InvalidOperation("Poller::add: the stream was already added");
    }
    // [sub.hub] as in MsgStream::check_not_subscribed(): a subscribed stream's messages go to
    // its subscriptions, and its hub is the stream's only receiver.
    if (stream.hub_.load(std::memory_order::acquire) != nullptr) {
        throw InvalidOperation("Poller::add: the stream has subscriptions (MsgStream::subscribe)");
    }
    if (!streams_.empty() && &streams_.front()->state_->core() != &state.core()) {
        throw InvalidOperation("Poller::add: all streams of a Poller must belong to one Actor");
    }
    streams_.push_back(&stream);
}

bool Poller::remove(MsgStream& stream) noexcept {
    const auto it = std::find(streams_.begin(), streams_.end(), &stream);
    if (it == streams_.end()) return false;
    streams_.erase(it);
    return true;
}

std::vector<MsgStream*> Poller::wait(Deadline deadline) {
    std::vector<MsgStream*> ready;
    const auto collect = [&] {
        ready.clear();
        for (MsgStream* s : streams_) {
            if (s->state_->poll_ready()) ready.push_back(s);
        }
        return !ready.empty();
    };
    if (streams_.empty()) {
        // Nothing could ever be ready: returning at once would spin a wait loop, sleeping until
        // the deadline would hang one without a deadline.
        throw InvalidOperation("Poller::wait with no stream added");
    }
    if (collect()) return ready;
    detail::ActorCore& core = streams_.front()->state_->core();
    const detail::BorrowedSlot slot(core.slots());
    shm::Waiter waiter(core.wake_table(), slot.index());
    shm::WakeCell cell{};  // ours alone: the rings and notify() bump the slot directly
    struct Withdraw {
        std::vector<MsgStream*>& streams;
        ~Withdraw() {
            for (MsgStream* s : streams) (void)s->state_->poll_advertise(std::nullopt);
        }
    } withdraw{streams_};
    // Which streams have the slot in their data cell (a stream without an inbound ring yet gets
    // it once StreamOpen rang us and its ring exists).
    std::vector<char> in_cell(streams_.size(), 0);
    const auto advertise = [&] {
        bool switched = false;
        for (std::size_t i = 0; i < streams_.size(); ++i) {
            if (in_cell[i] != 0) continue;
            in_cell[i] = streams_[i]->state_->poll_advertise(slot.index()) ? 1 : 0;
            switched = switched || in_cell[i] != 0;
        }
        return switched;
    };
    bool switched = advertise();
    const std::stop_token stop = detail::current_stop_token();
    for (;;) {
        // A stream whose inbound ring appeared meanwhile (StreamOpen rang us) gets the slot in
        // its new data cell on the next round.
        const Deadline round =
            switched ? Deadline(std::min(deadline.at(), Clock::now() + shm::kModeSwitchWait))
                     : deadline;
        const auto wake = [&] {
            if (collect()) return true;
            for (std::size_t i = 0; i < streams_.size(); ++i) {
                if (in_cell[i] == 0 && streams_[i]->state_->has_inbound()) return true;
            }
            return false;
        };
        const shm::WaitStatus status = waiter.wait(cell, wake, round, stop);
        if (status == shm::WaitStatus::ready && !ready.empty()) return ready;
        if (status == shm::WaitStatus::cancelled) detail::throw_cancelled();
        if (deadline.expired()) return {};
        switched = advertise();
    }
}

}  // namespace shmctx
