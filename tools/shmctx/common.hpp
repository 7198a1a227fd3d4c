// Pieces shared by the `shmctx` subcommands: option parsing for the namespace selection,
// namespace discovery in /dev/shm, JSON string escaping. See docs/protocol.d/cli.md.
// Thread-safety: free functions, thread-safe; the CLI itself is single-threaded.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shmctx::cli {

/// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

/// A bad command line; main() prints it with the usage text and exits kExitUsage.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Options every subcommand takes: `--ns NS | --all-ns` and `--json`.
struct CommonOptions {
    std::string ns;       ///< as given; empty: resolve_namespace("") ($SHMCTX_NS, "default")
    bool all_ns = false;  ///< every namespace of our euid found in /dev/shm
    bool json = false;
};

/// Consumes args[i] (and its value) if it is a common option; true if it did. Throws
/// UsageError for a missing value or for `--ns` together with `--all-ns`.
bool parse_common(std::span<const std::string_view> args, std::size_t& i, CommonOptions& out);

/// The namespaces `options` selects, validated (UsageError for an invalid `--ns`), sorted.
/// For --all-ns: the <ns> of every /dev/shm entry named shmctx.<euid>.<ns>.<...> whose <ns>
/// is a valid namespace name (others are reported in `skipped`).
std::vector<std::string> selected_namespaces(const CommonOptions& options, uid_t euid,
                                             std::vector<std::string>& skipped);

/// `text` as a JSON string literal, quotes included. Control characters and bytes >= 0x80 are
/// written as \u00XX escapes, so the output is ASCII and valid JSON whatever the bytes (an error
/// text may quote a corrupt header).
std::string json_string(std::string_view text);

/// `text` with every byte outside printable ASCII replaced by '?': for the text output, which
/// may quote bytes read from a corrupt header and must not send control sequences to a terminal.
std::string printable(std::string_view text);

/// Parses a non-negative decimal integer no larger than `max`; UsageError naming `what`.
std::uint64_t parse_count(std::string_view what, std::string_view text, std::uint64_t max);

int run_clean(std::span<const std::string_view> args);
int run_ls(std::span<const std::string_view> args);
int run_stat(std::span<const std::string_view> args);
int run_errors(std::span<const std::string_view> args);
int run_perf(std::span<const std::string_view> args);
/// True for the command line of a process `shmctx perf` spawned in a peer role (`--role ...`,
/// argv[1]); run_perf_peer runs it and returns its exit status.
bool is_perf_peer(std::span<const std::string_view> args);
int run_perf_peer(std::span<const std::string_view> args);

}  // namespace shmctx::cli
