// The spill test of the harness (Test::spill; bench/README.md §6): an actor stream to a slow
// consumer in another process. First the overrun half: the default policy (on_full = raise, the
// consumer allows no overruns) raises StreamOverrun once the consumer's 64-message ring is
// full. Then the spill half: the consumer declares allow_overruns, the producer keeps its fixed
// rate, the excess goes to the sender's spill, which the drainer thread writes to the ring as
// the consumer frees room; the consumer checks every sequence number (order and count: zero
// loss). Figures: SpillResult (harness.hpp), with the spill depth sampled over time.
//
// The consumer side runs in a server process: /proc/self/exe --role stream-server (peer_main
// hands it to stream_server_main), an Actor exposing the sink endpoints below. Programs that
// stream to it for other reasons (bench/stream_bench.cpp's throughput rounds) use the same
// endpoints and the same checks.
//
// Thread-safety: every function is called from one thread at a time; spill_run and
// overrun_run run the context body on the calling thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "harness.hpp"
#include "shmctx/actor.hpp"

namespace shmctx::bench {

/// peer_main's role for the stream server: `--role stream-server --ns NS --name NAME
/// [--ring-bytes N]`; prints "ready", serves until "quit" on stdin (or EOF).
inline constexpr std::string_view kStreamServerRole = "stream-server";
int stream_server_main(std::span<const std::string_view> args);

/// Endpoints of the stream server (all run sink(): read, check, optionally slowly):
/// "sink": a message capacity the ring's bytes reach first, no overruns (throughput);
/// "sink_overrun": the default 64-message ring, allow_overruns (the spill);
/// "sink_raise": the default 64-message ring, no overruns (the overrun half).
inline constexpr std::string_view kSinkEndpoint = "sink";
inline constexpr std::string_view kSinkOverrunEndpoint = "sink_overrun";
inline constexpr std::string_view kSinkRaiseEndpoint = "sink_raise";
void expose_sink_endpoints(Actor& actor);

/// The sink's arguments: read `count` messages of `msg_bytes` with MsgStream::drain, message i
/// carrying sequence number i in its first 8 bytes (anything else fails the context); the
/// first `slow_count` cost `slow_ns` each (a busy wait: the slow consumer); the reading
/// thread is pinned to `cpu` while it reads (-1: not). Its Return: "<fast_ns> <received>", the
/// time to read the messages after the slow ones, and how many it read and checked.
struct SinkArgs {
    std::uint64_t count = 0;
    std::uint64_t slow_ns = 0;
    std::uint64_t slow_count = 0;
    int cpu = -1;
    std::size_t msg_bytes = 64;
    std::string encode() const;
    static SinkArgs decode(const std::string& text);
};

/// Writes `seq` into the first 8 bytes of `message` (the rest stays as it is).
void stamp_sequence(std::span<std::byte> message, std::uint64_t seq);

/// The overrun half on an open portal to a stream server: messages accepted before
/// StreamOverrun; fills result.overrun_after and overrun_what.
void overrun_run(Portal& portal, const SpillOptions& options, SpillResult& result);
/// The spill half on an open portal to a stream server; fills the rest of `result`. Throws
/// CheckFailed unless every message arrived in order and none was discarded.
void spill_run(Portal& portal, const SpillOptions& options, SpillResult& result);

/// Spawns a stream server in namespace `ns`, runs overrun_run and spill_run against it, stops
/// it. Every object of `ns` is gone afterwards, also when it fails.
SpillResult run_spill(const SpillOptions& options, const std::string& ns, std::ostream& progress);

/// Voluntary context switches (sleeps) of this process's thread named `comm` (-1 if none).
long thread_sleeps(std::string_view comm);
/// CPU seconds of this process's thread named `comm` (-1 if none).
double thread_cpu_seconds(std::string_view comm);

}  // namespace shmctx::bench
