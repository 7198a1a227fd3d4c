// The cancel test of the harness (Test::cancel; bench/README.md §7): the latency of
// ctx.cancel(), from the call to its return with the child's ContextCancelled recorded, of a
// child parked in receive() ("park") and of one blocked in send() with both data rings full
// ("park_full"). Each cancel is checked: cancel_acked() true when cancel() returned, and
// open_context returning our own cancel as absorbed.
//
// The child side runs in a server process: /proc/self/exe --role cancel-server (peer_main hands
// it to cancel_server_main), or any actor that calls expose_cancel_endpoints
// (bench/context_rtt.cpp's server does, beside its round-trip endpoints).
//
// Thread-safety: every function is called from one thread at a time.
#pragma once

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "harness.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"

namespace shmctx::bench {

/// peer_main's role for the cancel server: `--role cancel-server --ns NS --name NAME`; prints
/// "ready", serves until "quit" on stdin (or EOF).
inline constexpr std::string_view kCancelServerRole = "cancel-server";
int cancel_server_main(std::span<const std::string_view> args);

/// ctx.started(args), then returns args + 1 (the context round trip: open, Start, Started,
/// Return).
inline constexpr std::string_view kEchoEndpoint = "echo";
/// started(args), opens its stream, blocks in receive(): only a cancel ends it.
inline constexpr std::string_view kParkEndpoint = "park";
/// started(args), opens its stream (on_full = block), fills the parent's inbound ring with
/// try_send, then blocks in send(): only a cancel ends it.
inline constexpr std::string_view kParkFullEndpoint = "park_full";
/// Exposes echo, park and park_full.
void expose_cancel_endpoints(Actor& actor);

/// The echo endpoints' result: the argument's successor (DecodeError if it is no integer).
Payload successor(const Payload& in);

/// One context round trip: open_context on "echo" with argument `tag` and an empty body, timed
/// from the call to its return. Throws CheckFailed unless the started value is `tag` and the
/// result `tag + 1`. Returns its latency.
Clock::duration context_round_trip_once(Portal& portal, std::int64_t tag);

/// One cancel of a parked child: open_context on "park" or (`full`) "park_full" with argument
/// `tag`; in the body, for park_full both data rings are filled first (fill_both_rings), then
/// `cancel_after` passes and ctx.cancel() is timed alone. Throws CheckFailed unless the started
/// value is `tag`, the cancel was acknowledged when cancel() returned and open_context
/// absorbed it. Returns the cancel's latency.
Clock::duration cancel_once(Portal& portal, bool full, std::int64_t tag, Duration stall,
                            Duration cancel_after);

/// Waits until the child of a park_full context has filled our inbound ring and blocks in
/// send(), after we filled its inbound ring: both data rings full, nobody reading.
void fill_both_rings(Context& ctx, MsgStream& stream, Duration stall);

/// All counters of a ring, for a failed check's message.
std::string describe(const shm::RingCounters& c);

/// Spawns a cancel server in namespace `ns`, runs options.warmup then options.iterations
/// context round trips and cancels of each kind against it, stops it. Every object of `ns` is gone
/// afterwards, also when it fails.
CancelResult run_cancel(const CancelOptions& options, const std::string& ns,
                        std::ostream& progress);

}  // namespace shmctx::bench
