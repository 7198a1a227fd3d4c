// The server process of the harness's actor tests (spill.hpp, cancel.hpp): a copy of the
// program in a peer role holding one shmctx::Actor with the test's endpoints, and the parent
// side that spawns it, connects a client actor and tears both down, also on failure.
// Thread-safety: one thread per call.
#pragma once

#include <cstddef>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "shmctx/actor.hpp"

namespace shmctx::bench {

/// The peer side of `--role <role> --ns NS --name NAME [--ring-bytes N]`: dies with its parent
/// (PR_SET_PDEATHSIG), creates the actor, calls `expose`, prints "ready", serves until "quit" on
/// stdin (or EOF), then shuts the actor down in order. Returns the exit status (3 on any error,
/// message on stderr, prefixed by `what`).
int actor_server_main(std::span<const std::string_view> args, std::string_view what,
                      const std::function<void(Actor&)>& expose);

/// The parent side: spawns /proc/self/exe as `--role <role>` in namespace `ns` with data rings
/// of `ring_bytes`, connects a client actor of the same settings and runs `body` on the portal;
/// then asks the server to quit (it must exit with status 0). On any failure the server is
/// killed, the namespace swept (shm::reclaim_stale: a dead server cannot remove its objects;
/// the namespace must hold only this test's actors) and the error rethrown with the server's
/// fate.
/// `client_cpu`/`server_cpu` >= 0 pin the client actor (the calling thread, while the client
/// exists: its threads inherit the mask; the caller's mask is restored after) and the server
/// process (before its actor exists).
void with_actor_server(std::string_view role, const std::string& ns, std::size_t ring_bytes,
                       std::ostream& progress, const std::function<void(Portal&)>& body,
                       int client_cpu = -1, int server_cpu = -1);

}  // namespace shmctx::bench
