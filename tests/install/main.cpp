// Links against the installed shmctx and checks the versions it reports.
#include <cstdio>
#include <shmctx/version.hpp>

int main() {
    std::printf("shmctx %.*s, layout %u, protocol %u: find_package works\n",
                static_cast<int>(shmctx::library_version().size()),
                shmctx::library_version().data(), shmctx::layout_version(),
                shmctx::protocol_version());
    return shmctx::layout_version() > 0 ? 0 : 1;
}
