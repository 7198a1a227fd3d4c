#include "common.hpp"

#include <dirent.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <set>

#include "shmctx/errors.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::cli {

bool parse_common(std::span<const std::string_view> args, std::size_t& i, CommonOptions& out) {
    const std::string_view arg = args[i];
    if (arg == "--json") {
        out.json = true;
    } else if (arg == "--all-ns") {
        if (!out.ns.empty()) throw UsageError("--all-ns and --ns exclude each other");
        out.all_ns = true;
    } else if (arg == "--ns") {
        if (i + 1 >= args.size()) throw UsageError("--ns needs a namespace");
        if (out.all_ns) throw UsageError("--all-ns and --ns exclude each other");
        out.ns = std::string(args[++i]);
        if (out.ns.empty()) throw UsageError("--ns needs a non-empty namespace");
    } else {
        return false;
    }
    return true;
}

std::vector<std::string> selected_namespaces(const CommonOptions& options, uid_t euid,
                                             std::vector<std::string>& skipped) {
    if (!options.all_ns) {
        try {
            return {shm::resolve_namespace(options.ns)};
        } catch (const InvalidName& e) {
            throw UsageError(e.what());
        }
    }
    // Every object of a namespace is named shmctx.<euid>.<ns>.<kind>...; <ns> has no dot.
    const std::string prefix = "shmctx." + std::to_string(euid) + ".";
    std::set<std::string> found;
    std::set<std::string> bad;
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(std::string(shm::kShmDir).c_str()),
                                            ::closedir);
    if (!dir) return {};
    while (const dirent* e = ::readdir(dir.get())) {
        const std::string_view name(e->d_name);
        if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) continue;
        const std::string_view rest = name.substr(prefix.size());
        const std::size_t dot = rest.find('.');
        if (dot == std::string_view::npos) continue;  // not an object of any namespace
        const std::string ns(rest.substr(0, dot));
        try {
            shm::validate_component("namespace", ns, shm::kMaxNamespaceBytes);
            found.insert(ns);
        } catch (const InvalidName&) {
            bad.insert(std::string(name));
        }
    }
    for (const auto& b : bad) skipped.push_back("skipped '" + b + "': not a valid namespace");
    return {found.begin(), found.end()};
}

std::string json_string(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size() + 2);
    out.push_back('"');
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20 || c >= 0x7f) {
                    out += "\\u00";
                    out.push_back(kHex[c >> 4]);
                    out.push_back(kHex[c & 0xf]);
                } else {
                    out.push_back(ch);
                }
        }
    }
    out.push_back('"');
    return out;
}

std::string printable(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c < 0x20 || c > 0x7e) c = '?';
    }
    return out;
}

std::uint64_t parse_count(std::string_view what, std::string_view text, std::uint64_t max) {
    std::uint64_t value = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() || value > max) {
        throw UsageError(std::string(what) + " '" + std::string(text) + "' is not a number in 0.." +
                         std::to_string(max));
    }
    return value;
}

}  // namespace shmctx::cli
