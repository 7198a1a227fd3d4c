// One thread consuming many streams (DESIGN.md §5 "Poller"; docs/protocol.md §10.4).
//
//   Poller poller;
//   poller.add(a); poller.add(b);
//   for (;;) for (MsgStream* s : poller.wait()) s->drain(handle, 256);
//
// wait() sleeps on one wake slot that every added stream's inbound ring and context events
// ring (the wake protocol of the rings, wake.hpp), so a thread can serve hundreds of streams
// without spinning over them and without a thread per stream.
#pragma once

#include <cstddef>
#include <vector>

#include "shmctx/context.hpp"
#include "shmctx/deadline.hpp"

namespace shmctx {

/// Waits until any of several streams has something to receive.
/// Thread-safety: one thread uses a Poller, and that thread is the receiving thread of every
/// stream added (no other thread receives on them meanwhile). Streams must belong to one Actor
/// and outlive their membership (remove() them, or destroy the Poller, first).
class Poller {
public:
    Poller() = default;
    Poller(const Poller&) = delete;
    Poller& operator=(const Poller&) = delete;
    ~Poller() = default;

    /// Adds `stream`. InvalidOperation if it is added twice, belongs to another Actor than
    /// those added before, has subscriptions (MsgStream::subscribe: they receive its
    /// messages), or is a moved-from MsgStream.
    void add(MsgStream& stream);
    /// Removes `stream`; false if it was not added.
    bool remove(MsgStream& stream) noexcept;
    std::size_t size() const noexcept { return streams_.size(); }

    /// The added streams on which receive() would not wait now (a message, the end of the
    /// stream, or an error it raises), in the order they were added; waits up to `deadline` for
    /// at least one (an empty result means the deadline passed). Cancellable: throws
    /// shmctx::Cancelled when the caller's cancel scope is cancelled. With no stream added it
    /// raises InvalidOperation (nothing could become ready).
    std::vector<MsgStream*> wait(Deadline deadline = {});

private:
    std::vector<MsgStream*> streams_;
};

}  // namespace shmctx
