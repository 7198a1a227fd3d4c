// Boxing, relaying and unboxing of errors shipped in Error records (tractor spec §3.8, §6.17;
// DESIGN.md §4.5, §4.9 "Relaying"). Private to core; the table of rules is in
// docs/protocol.md "Errors".
//
//   box():   an exception escaping a context task (or a body) -> the fields of one Error record.
//   unbox(): a verified Error record -> std::exception_ptr holding a ContextCancelled or a
//            RemoteActorError. Core unboxes each record exactly once and stores the pointer
//            (first error wins), so every rethrow_exception() throws the same object (§4.5).
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string_view>
#include <vector>

#include "shmctx/errors.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/wire/codec.hpp"

namespace shmctx::detail {

/// One boxed error with owned storage. `info.cid` is always set (the context the record is
/// shipped on: Error.cid is required on the wire) and `hop` is the boxing actor (the record's
/// `sender`, the last entry of `info.relay_path`).
/// Thread-safety: single thread.
class BoxedError {
public:
    RemoteErrorInfo info;
    Uid hop;

    /// Views for ControlEncoder::error(), valid while *this lives and is not modified. The
    /// encoder caps the record (traceback first, then message, with a marker).
    wire::ErrorFields fields(std::uint64_t data_seq = 0);

private:
    std::vector<wire::UidRef> path_refs_;
};

/// Packs `error` for shipping on context `cid` by actor `self` (spec §3.8 packing, with the
/// multi-hop fix of §6.17 and DESIGN.md §4.9):
///  - ContextCancelled: fields copied (canceller kept), src_uid = self, boxed_type = src_type =
///    "ContextCancelled", self appended to relay_path.
///  - any other RemoteActorError (a remote error re-raised): an inception; src_uid, src_type,
///    canceller and sender kept, boxed_type = "RemoteActorError", self appended to relay_path.
///  - anything else (StreamOverrun, std exceptions, user types): src_uid = self, boxed_type =
///    src_type = error_type_name(e), message = what(), relay_path = [self]; a StreamOverrun
///    keeps its sender.
///  - shmctx::Cancelled: the caller should have turned it into make_context_cancelled();
///    boxed here as a ContextCancelled "by an unknown cause" with canceller = self.
///  - a non-std::exception object: type "<non-std exception>".
/// The traceback says where the error was raised or relayed: actor, endpoint (if given), cid.
/// Throws std::invalid_argument for a null `error`.
BoxedError box(const std::exception_ptr& error, const Uid& self, const Cid& cid,
               std::string_view endpoint = {});

/// The ContextCancelled a cancelled task ships (spec §3.2): src_uid = self, canceller =
/// `canceller` (self when unknown: it then says "by an unknown cause"), message
///   "'<side>'-side task was cancelled by itself" | "by its '<other side>'-side peer" |
///   "by a remote peer" | "by an unknown cause"
/// followed by "canceller: <uid>", "cancellee: <uid>", "cid: <cid>" and "reason: <reason>"
/// lines (reason only when given). `side` is the side of the cancelled task.
RemoteErrorInfo context_cancelled_info(const Uid& self, const Uid& peer,
                                       const std::optional<Uid>& canceller, const Cid& cid,
                                       Side side, std::string_view reason = {});
/// ContextCancelled(context_cancelled_info(...)).
ContextCancelled make_context_cancelled(const Uid& self, const Uid& peer,
                                        const std::optional<Uid>& canceller, const Cid& cid,
                                        Side side, std::string_view reason = {});

/// What box() makes of a ContextCancelled with fields `e` raised by this task itself (empty
/// relay_path), without an exception object: the cancel path ships it first and builds the
/// object afterwards (context_cancelled_info, then ContextCancelled(info)).
BoxedError box_own_cancel(const RemoteErrorInfo& e, const Uid& self, const Cid& cid,
                          std::string_view endpoint = {});

/// unbox() with what the receiver decides on at hand, so that it needs no rethrow to look:
/// `info` points into the error object (valid as long as `error` lives).
struct Unboxed {
    std::exception_ptr error;
    const RemoteErrorInfo* info = nullptr;
    bool context_cancelled = false;
};
Unboxed unbox_fields(const wire::fb::Error& record);

/// The error carried by a verified Error record: a ContextCancelled when boxed_type is
/// "ContextCancelled", else a RemoteActorError (a shipped StreamOverrun is a RemoteActorError
/// with boxed_is<StreamOverrun>(), spec §3.8). cid() is the record's cid; the record's sender
/// is appended to relay_path when the path does not already end with it; a boxed or relayed
/// StreamOverrun has sender() = src_uid (shmctx's sender detects its own overrun, DESIGN.md
/// §4.2). Throws std::invalid_argument when `view` is not an Error record.
std::exception_ptr unbox(const wire::ControlView& view);
std::exception_ptr unbox(const wire::fb::Error& record);

/// The fields of a verified Error record, as unbox() interprets them.
RemoteErrorInfo unbox_info(const wire::fb::Error& record);

}  // namespace shmctx::detail
