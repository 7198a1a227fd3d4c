#include "core/actor_core.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "core/backoff.hpp"
#include "core/boxing.hpp"
#include "core/context_state.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/ring.hpp"

namespace shmctx::detail {

namespace {

/// Records per control ring per pass: a busy link cannot starve the others.
constexpr std::size_t kRecordsPerPass = 256;

wire::ContextSettings settings_of(const wire::fb::ContextOptions* o) {
    wire::ContextSettings s;
    if (o != nullptr) {
        s.msg_buffer_size = o->msg_buffer_size();
        s.allow_overruns = o->allow_overruns();
    }
    return s;
}

std::string ns_text(Duration d) { return std::to_string(d.count()) + " ns"; }

[[noreturn]] void bad_option(std::string_view field, const std::string& value,
                             std::string_view bound) {
    throw std::invalid_argument("ActorOptions::" + std::string(field) + " = " + value + ": " +
                                std::string(bound));
}

/// The bounds actor.hpp documents for each field; std::invalid_argument naming the field, the
/// value and the bound. Runs before anything is claimed or created.
ActorOptions validated(ActorOptions o) {
    if ((o.mode & ~mode_t{0777}) != 0 || (o.mode & 0600) != 0600) {
        char text[16];
        std::snprintf(text, sizeof text, "0%o", static_cast<unsigned>(o.mode));
        bad_option("mode", text, "must be within 0777 and include 0600 (owner read and write)");
    }
    if (o.max_endpoints == 0) bad_option("max_endpoints", "0", "must be at least 1");
    if (o.endpoint_idle_timeout < Duration::zero()) {
        bad_option("endpoint_idle_timeout", ns_text(o.endpoint_idle_timeout), "is negative");
    }
    if (o.msg_buffer_size == 0) bad_option("msg_buffer_size", "0", "must be at least 1");
    if (!std::has_single_bit(o.data_ring_bytes) || o.data_ring_bytes < kMinDataRingBytes ||
        o.data_ring_bytes > shm::kMaxRingDataBytes) {
        bad_option("data_ring_bytes", std::to_string(o.data_ring_bytes),
                   "must be a power of two in [4096, 2^40]");
    }
    // Our link arena holds our control ring and at least one data ring.
    const std::size_t arena_need =
        shm::kArenaCarveBase +
        shm::Arena::class_bytes(shm::ring_region_bytes(kControlRingDataBytes)) +
        shm::Arena::class_bytes(shm::ring_region_bytes(o.data_ring_bytes));
    if (o.arena_bytes % 4096 != 0 || o.arena_bytes < arena_need) {
        bad_option("arena_bytes", std::to_string(o.arena_bytes),
                   "must be a multiple of 4096 of at least " + std::to_string(arena_need) +
                       " (the control ring and one data ring of data_ring_bytes = " +
                       std::to_string(o.data_ring_bytes) + ")");
    }
    if (o.max_control_record_bytes < kMinControlRecordBytes ||
        o.max_control_record_bytes > kMaxControlRecordBytes) {
        bad_option("max_control_record_bytes", std::to_string(o.max_control_record_bytes),
                   "must be in [" + std::to_string(kMinControlRecordBytes) + ", " +
                       std::to_string(kMaxControlRecordBytes) +
                       "] (the largest record of the control ring)");
    }
    if (o.spin_before_sleep < Duration::zero()) {
        bad_option("spin_before_sleep", ns_text(o.spin_before_sleep), "is negative");
    }
    if (o.heartbeat_interval <= Duration::zero()) {
        bad_option("heartbeat_interval", ns_text(o.heartbeat_interval), "must be positive");
    }
    if (o.unresponsive_after <= o.heartbeat_interval) {
        bad_option("unresponsive_after", ns_text(o.unresponsive_after),
                   "must be longer than heartbeat_interval = " + ns_text(o.heartbeat_interval));
    }
    if (o.unresponsive_timeout != Duration::zero() &&
        o.unresponsive_timeout < o.unresponsive_after) {
        bad_option(
            "unresponsive_timeout", ns_text(o.unresponsive_timeout),
            "must be 0 (off) or at least unresponsive_after = " + ns_text(o.unresponsive_after));
    }
    return o;
}

shm::LocalActorOptions record_options(const ActorOptions& o) {
    shm::LocalActorOptions r;
    r.claim.mode = o.mode;
    return r;
}

EndpointPoolOptions pool_options(const ActorOptions& o, ActorCore* core) {
    EndpointPoolOptions p;
    p.on_idle_poll = [core] { return core->help_poll(); };
    p.on_idle_watch = [core](bool watching) { core->helping(watching); };
    p.max_threads = o.max_endpoints;
    p.idle_timeout = o.endpoint_idle_timeout;
    p.spin_before_sleep = o.spin_before_sleep;
    p.name = "shmctx-endpoint";
    p.on_error = [core](std::exception_ptr e) { core->report_exception("endpoint pool", e); };
    return p;
}

}  // namespace

ActorCore::ActorCore(std::string name, ActorOptions options)
    : options_(validated(std::move(options))),
      names_(options_.ns),
      record_(names_, name, record_options(options_)),
      uid_{std::move(name), record_.uuid()},
      counters_(record_.segment().counters()),
      errors_(record_.segment().error_log()),
      wake_table_(record_.segment().wake_table()),
      slots_(wake_table_.capacity()),
      canceller_([this](std::exception_ptr e) { report_exception("canceller task threw", e); },
                 "shmctx-cancel"),
      pool_(pool_options(options_, this)) {
    const auto doorbell = slots_.allocate();
    if (!doorbell || *doorbell != 0) {
        throw SystemError("wake slot 0 (the control loop's doorbell) is not free");
    }
    doorbell_ = *doorbell;
}

ActorCore::~ActorCore() { shutdown(); }

void ActorCore::start() {
    std::weak_ptr<ActorCore> weak = weak_from_this();
    watcher_.emplace(
        &record_.segment().heartbeat(),
        [weak](const Uuid& peer, shm::LivenessEvent event) {
            // Runs on the watcher thread: hand it to the control loop, never block here.
            if (auto core = weak.lock()) {
                core->post([core = core.get(), peer, event] { core->on_liveness(peer, event); });
            }
        },
        shm::LivenessOptions{options_.heartbeat_interval, options_.unresponsive_after,
                             options_.unresponsive_timeout});
    loop_ = std::thread([this] { control_loop(); });
}

Spawner& ActorCore::supervisor() {
    const std::lock_guard lock(supervisor_mu_);
    if (!supervisor_) supervisor_ = std::make_unique<Spawner>();
    return *supervisor_;
}

void ActorCore::shutdown() {
    {
        const std::lock_guard lock(mu_);
        if (shutting_down_) return;
        shutting_down_ = true;
    }
    // 1. Every task of ours ends: endpoints (child contexts) and parent bodies nested in the
    //    root scope observe this; the pool waits for the endpoints' terminals to be sent.
    root_scope_.cancel(uid_, "actor " + uid_.to_string() + " is shutting down");
    pool_.shutdown();
    // An actor cancel in progress ends with the tasks above (its acks go out before the links
    // close); nothing started after shutting_down_ was set.
    if (actor_cancel_thread_.joinable()) actor_cancel_thread_.join();
    {
        const std::lock_guard lock(mu_);
        actor_cancel_done_ = true;
    }
    actor_cancel_cv_.notify_all();
    // 2. Close every link in order: the peers' contexts with us fail with TransportClosed.
    std::vector<std::shared_ptr<Link>> links;
    {
        const std::lock_guard lock(mu_);
        for (auto& [uuid, link] : links_) links.push_back(link);
    }
    for (auto& link : links) {
        (void)link->send([](wire::ControlEncoder& enc) {
            return enc.link_close(wire::fb::LinkCloseReason::shutdown, "actor shut down");
        });
        link_lost(link, LinkState::closed,
                  std::make_exception_ptr(TransportClosed("actor " + uid_.to_string() +
                                                          " shut down its link to " +
                                                          link->peer().to_string())));
    }
    // The drainer discards what is still spilled (the contexts are cancelled) and stops.
    {
        const std::lock_guard lock(drainer_mu_);
        drainer_stopped_ = true;
    }
    if (OverflowDrainer* d = drainer_if_started()) d->stop();
    // 3. The control loop flushes what is queued, then stops.
    stop_.store(true, std::memory_order::release);  // [core.stop] pairs with control_loop()
    wake_control_loop();
    if (loop_.joinable()) loop_.join();
    watcher_.reset();
    canceller_.stop();
    std::map<ContextKey, std::shared_ptr<ContextState>> contexts;
    {
        const std::lock_guard lock(mu_);
        contexts.swap(contexts_);
        links_.clear();
        publish_links_locked();
        requests_.clear();
    }
    fail_actor_requests(nullptr);
    // 4. The name goes now (docs/protocol.md §9.7 step 4): a new Actor may claim it at once.
    //    Portals, contexts, streams and subscriptions that outlive us hold this core by
    //    shared_ptr; they keep only the mappings (our segment, the links' arenas, all unlinked
    //    already), which they may still touch, and their calls fail with TransportClosed.
    record_.release_name();
}

bool ActorCore::shut_down() const {
    const std::lock_guard lock(mu_);
    return shutting_down_;
}

OverflowDrainer& ActorCore::drainer() {
    if (OverflowDrainer* d = drainer_if_started()) return *d;
    const std::lock_guard lock(drainer_mu_);
    if (!drainer_) {
        const std::optional<std::uint32_t> slot = slots_.allocate();
        if (!slot) throw SystemError("no free wake slot for the overflow drainer");
        drainer_ = std::make_unique<OverflowDrainer>(wake_table_, *slot);
        if (drainer_stopped_) drainer_->stop();  // the actor shut down: refuse and discard
        // [core.drainer] pairs with the acquire in drainer_if_started().
        drainer_ptr_.store(drainer_.get(), std::memory_order::release);
    }
    return *drainer_;
}

void ActorCore::expose(std::string fn, Endpoint endpoint, ExposeOptions options) {
    if (fn.empty()) throw std::invalid_argument("expose: empty function name");
    if (!endpoint) throw std::invalid_argument("expose: empty endpoint for '" + fn + "'");
    const std::lock_guard lock(mu_);
    endpoints_[std::move(fn)] =
        std::make_shared<const Exposed>(Exposed{std::move(endpoint), options});
}

Cid ActorCore::next_cid() noexcept {
    // relaxed: only uniqueness matters.
    return Cid{uid_.uuid, next_seq_.fetch_add(1, std::memory_order::relaxed) + 1};
}

void ActorCore::register_context(const std::shared_ptr<ContextState>& ctx) {
    const std::lock_guard lock(mu_);
    if (shutting_down_) {
        throw TransportClosed("actor " + uid_.to_string() + " is shutting down");
    }
    // A Start dispatched by a helper may race the loss of its link: link_lost marks the link
    // final before it takes mu_ to collect its contexts, so either we see it here or it sees us.
    const LinkState link_state = ctx->link().state();
    if (link_state != LinkState::up && link_state != LinkState::awaiting_peer) {
        // The link's own reason first (PeerDied for a dead peer, the LinkClose text, ...).
        if (const std::exception_ptr why = ctx->link().failure()) std::rethrow_exception(why);
        throw TransportClosed("the link to " + ctx->peer().to_string() + " is " +
                              to_string(link_state));
    }
    if (ctx->side() == Side::child && actor_cancel_called_.load(std::memory_order::relaxed)) {
        // relaxed: written under mu_. A cancelled actor starts no task (spec §3.6 step 2).
        throw make_context_cancelled(uid_, ctx->peer(), cancel_caller_, ctx->cid(), Side::child,
                                     "actor " + uid_.to_string() + " was cancelled");
    }
    const auto [it, inserted] = contexts_.emplace(ContextKey{ctx->peer().uuid, ctx->cid()}, ctx);
    if (!inserted) {
        throw ProtocolError("context " + ctx->cid().to_string() + " with " +
                            ctx->peer().to_string() + " exists already");
    }
}

void ActorCore::unregister_context(const ContextState& ctx) {
    const std::lock_guard lock(mu_);
    const auto it = contexts_.find(ContextKey{ctx.peer().uuid, ctx.cid()});
    if (it != contexts_.end() && it->second.get() == &ctx) contexts_.erase(it);
}

std::shared_ptr<ContextState> ActorCore::find_context(const Uuid& peer, const Cid& cid) const {
    const std::lock_guard lock(mu_);
    const auto it = contexts_.find(ContextKey{peer, cid});
    return it == contexts_.end() ? nullptr : it->second;
}

void ActorCore::register_request(std::uint64_t request_id,
                                 const std::shared_ptr<ContextState>& ctx) {
    const std::lock_guard lock(mu_);
    requests_[request_id] = ctx;
}

void ActorCore::forget_request(std::uint64_t request_id) {
    const std::lock_guard lock(mu_);
    requests_.erase(request_id);
}

std::size_t ActorCore::open_contexts() const {
    const std::lock_guard lock(mu_);
    return contexts_.size();
}

std::size_t ActorCore::link_count() const {
    const std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& [uuid, link] : links_) {
        if (link->state() == LinkState::up) ++n;
    }
    return n;
}

void ActorCore::wake_control_loop() noexcept {
    counters_.add(shm::ActorCounter::control_loop_wakes);
    shm::ring(*wake_table_.slot(doorbell_));
}

void ActorCore::report_error(std::string_view text) noexcept {
    try {
        std::fprintf(stderr, "shmctx: %s: %.*s\n", uid_.to_string().c_str(),
                     static_cast<int>(text.size()), text.data());
    } catch (...) {
        // bad_alloc formatting our uid: the line without it.
        std::fprintf(stderr, "shmctx: %.*s\n", static_cast<int>(text.size()), text.data());
    }
    errors_.report(text);
    counters_.add(shm::ActorCounter::errors_reported);
}

void ActorCore::report_exception(const char* where, std::exception_ptr error) noexcept {
    report_to_stderr(where, error);
    try {
        errors_.report(std::string(where) + ": " + describe_exception(error));
    } catch (...) {
        // bad_alloc composing the text: the stderr line above stands.
    }
    counters_.add(shm::ActorCounter::errors_reported);
}

void ActorCore::post(std::function<void()> fn) {
    {
        const std::lock_guard lock(mu_);
        posted_.push_back(std::move(fn));
    }
    wake_control_loop();
}

// ---- links ----

std::shared_ptr<Link> ActorCore::make_link(shm::PeerActor peer, Uid peer_uid) {
    LinkSettings settings;
    settings.self = uid_;
    settings.arena_bytes = options_.arena_bytes;
    settings.mode = options_.mode;
    settings.max_control_record_bytes = options_.max_control_record_bytes;
    auto link = std::make_shared<Link>(names_, settings, std::move(peer), std::move(peer_uid));
    link->set_on_outbox([this] { wake_control_loop(); });
    link->set_counters(&counters_);
    {
        const std::lock_guard lock(mu_);
        if (const auto it = gone_.find(link->peer().uuid); it != gone_.end()) {
            // A new link to a peer whose earlier link ended: its old arena may still be there
            // (a stopped peer that has not noticed the end); attach only a new one.
            link->ignore_peer_arena(it->second);
        }
    }
    const shm::PeerActor& p = link->peer_actor();
    watcher_->watch(p.uuid(), p.pidfd(), &p.segment().heartbeat(), p.lock_fd());
    {
        const std::lock_guard lock(mu_);
        links_[p.uuid()] = link;
        publish_links_locked();
    }
    // [link.epoch] pairs with [link.epoch] in pass(): our arena exists before the peer looks.
    p.segment().links_epoch().fetch_add(1, std::memory_order::release);
    if (shm::WakeSlot* bell = link->peer_wakes().slot(0)) shm::ring(*bell);
    (void)SHMCTX_FAULT_POINT("link.after_announce");  // kill matrix: the peer saw our arena
    return link;
}

std::shared_ptr<LinkHandle> ActorCore::connect(std::string_view peer_name, Deadline deadline) {
    if (peer_name == uid_.name) {
        auto handle = std::make_shared<LinkHandle>(nullptr);
        handle->peer = uid_;
        return handle;
    }
    shm::PeerActor peer = shm::open_peer(names_, peer_name, deadline);  // ActorNotFound
    const Uuid uuid = peer.uuid();
    std::shared_ptr<Link> link;
    {
        const std::lock_guard create(link_create_mu_);
        {
            const std::lock_guard lock(mu_);
            if (shutting_down_) throw TransportClosed("actor " + uid_.to_string() + " shut down");
            const auto it = links_.find(uuid);
            if (it != links_.end()) link = it->second;
        }
        if (!link) {
            link = make_link(std::move(peer), Uid{std::string(peer_name), uuid});
        } else if (link->state() == LinkState::awaiting_peer) {
            // An earlier connect gave up waiting: the peer may have failed to make its side
            // (a full /dev/shm: ShmExhausted, logged on its stderr), and it scans again only
            // when our announcement moves. Announce again, so that a retry can succeed.
            const shm::PeerActor& p = link->peer_actor();
            // [link.epoch] pairs with [link.epoch] in pass(): our arena exists already.
            p.segment().links_epoch().fetch_add(1, std::memory_order::release);
            if (shm::WakeSlot* bell = link->peer_wakes().slot(0)) shm::ring(*bell);
        }
    }
    wake_control_loop();  // attach the peer's arena if it exists already
    std::unique_lock lock(mu_);
    const bool settled = links_cv_.wait_until(
        lock, deadline.at(), [&] { return link->state() != LinkState::awaiting_peer; });
    lock.unlock();
    if (!settled) {
        throw ActorNotFound("actor '" + std::string(peer_name) + "' in namespace '" + names_.ns() +
                            "' did not answer the link in time (if it is alive, it could not "
                            "make its side: see its stderr)");
    }
    if (link->state() != LinkState::up) {
        if (auto e = link->failure()) std::rethrow_exception(e);
        throw TransportClosed("the link to " + link->peer().to_string() + " is " +
                              to_string(link->state()));
    }
    auto handle = std::make_shared<LinkHandle>(link);
    handle->peer = link->peer();
    return handle;
}

void ActorCore::scan_links() {
    // Arenas named link.<owner>.<us> whose owner we have no link with yet: a peer connecting.
    const std::string suffix = "." + uid_.uuid.to_hex();
    for (const std::string& entry : names_.list("link")) {
        if (entry.size() != 65 || entry.compare(32, std::string::npos, suffix) != 0) continue;
        Uuid owner;
        if (!Uuid::parse_hex(std::string_view(entry).substr(0, 32), owner)) continue;
        std::optional<ino_t> ended;  // the peer's arena of a link that ended
        {
            const std::lock_guard lock(mu_);
            if (shutting_down_ || links_.count(owner) != 0) continue;
            if (const auto it = gone_.find(owner); it != gone_.end()) ended = it->second;
        }
        if (ended) {
            // That arena stays ignored (it lingers until the peer notices the end); another
            // object under the name is the peer linking afresh. stat() outside mu_.
            const std::optional<ino_t> ino = shm::object_inode(names_.prefix() + "link." + entry);
            if (!ino || *ino == *ended) continue;
        }
        // Its name: the published segment that says it is `owner`. A scan, but only when a
        // new link appears.
        for (const std::string& name : names_.list("seg")) {
            std::optional<shm::PeerActor> peer;
            try {
                peer.emplace(shm::open_peer(names_, name, Deadline(Clock::now())));
            } catch (const Error&) {
                continue;  // dead, half built, or another version: not a peer we can link
            }
            if (peer->uuid() != owner) continue;
            const std::lock_guard create(link_create_mu_);
            {
                const std::lock_guard lock(mu_);
                if (links_.count(owner) != 0) break;
            }
            try {
                (void)make_link(std::move(*peer), Uid{name, owner});
            } catch (const Error& e) {
                counters_.add(shm::ActorCounter::link_refused);
                report_error("cannot link to " + name + ": " + e.what());
            }
            break;
        }
    }
}

void ActorCore::link_lost(const std::shared_ptr<Link>& link, LinkState state,
                          const std::exception_ptr& why) {
    if (!link->finish(state, why)) return;
    counters_.add(state == LinkState::dead     ? shm::ActorCounter::links_peer_died
                  : state == LinkState::closed ? shm::ActorCounter::links_closed
                                               : shm::ActorCounter::links_failed);
    // The peer's arena of this link, never to be linked again (scan_links, attach_peer): the
    // one we attached, else whatever is under its name now (the peer may have made it while
    // we never attached it); none: nothing to ignore. stat() before mu_.
    const shm::ArenaView* theirs = link->peer_attached() ? link->peer_arena() : nullptr;
    const std::optional<ino_t> ended =
        theirs != nullptr ? std::optional<ino_t>(theirs->inode())
                          : shm::object_inode(names_.arena(link->peer().uuid, uid_.uuid));
    std::vector<std::shared_ptr<ContextState>> affected;
    {
        const std::lock_guard lock(mu_);
        const auto it = links_.find(link->peer().uuid);
        if (it != links_.end() && it->second == link) {
            links_.erase(it);
            publish_links_locked();
        }
        if (ended) {
            gone_[link->peer().uuid] = *ended;
        } else {
            gone_.erase(link->peer().uuid);
        }
        for (auto& [key, ctx] : contexts_) {
            if (key.peer == link->peer().uuid) affected.push_back(ctx);
        }
    }
    if (watcher_) watcher_->unwatch(link->peer().uuid);
    if (state != LinkState::dead) {
        // [core.rescan] pairs with pass(): the peer may have made a new arena already.
        rescan_links_.store(true, std::memory_order::release);
        wake_control_loop();
    }
    links_cv_.notify_all();
    fail_actor_requests(link.get());
    for (auto& ctx : affected) ctx->on_link_lost(why);
}

void ActorCore::on_liveness(const Uuid& peer, shm::LivenessEvent event) {
    std::shared_ptr<Link> link;
    {
        const std::lock_guard lock(mu_);
        const auto it = links_.find(peer);
        if (it != links_.end()) link = it->second;
    }
    if (!link) return;
    const auto ms = [](Duration d) {
        return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) +
               " ms";
    };
    const std::string who = "actor " + link->peer().to_string() + " (pid " +
                            std::to_string(link->peer_actor().pid()) + ")";
    switch (event) {
        case shm::LivenessEvent::unresponsive:
            // A hint, never death: a stopped or starved process comes back.
            link->set_peer_unresponsive(true);
            counters_.add(shm::ActorCounter::peers_unresponsive);
            report_error(who + " is unresponsive: no heartbeat for " +
                         ms(options_.unresponsive_after));
            return;
        case shm::LivenessEvent::responsive:
            link->set_peer_unresponsive(false);
            std::fprintf(stderr, "shmctx: %s: %s is responsive again\n", uid_.to_string().c_str(),
                         who.c_str());
            return;
        case shm::LivenessEvent::stalled:
            // The watcher raises a timeout below unresponsive_after to it.
            give_up_on(
                link, who + " showed no heartbeat for " +
                          ms(std::max(options_.unresponsive_timeout, options_.unresponsive_after)) +
                          " (unresponsive_timeout): gave up on it");
            return;
        case shm::LivenessEvent::dead:
            break;
    }
    // What the peer published before it died still counts (DESIGN.md §4.7): its control
    // records (a StreamOpen, a Return, a ctxc) are read before the link is declared lost, as
    // they would have been had the death been noticed a moment later. It writes nothing more.
    try {
        if (link->peer_attached() || link->attach_peer(names_)) {
            const auto dispatch_one = [&](const wire::ControlView& msg) { dispatch(link, msg); };
            while (link->read_control(dispatch_one, kRecordsPerPass) == kRecordsPerPass) {
            }
        }
    } catch (...) {
        // A record it left corrupt: its death is the outcome all the same.
    }
    link_lost(link, LinkState::dead, std::make_exception_ptr(PeerDied(who + " died")));
    // The dead actor cannot remove its objects; we have the kernel's word that it is gone, so
    // nobody needs `shmctx clean` for it (DESIGN.md §4.7). A restarted actor of that name has
    // its lock and is left alone. Our mappings of its segment and arena stay valid.
    try {
        (void)shm::reclaim_dead_actor(names_, link->peer().name, link->peer().uuid);
    } catch (...) {
        report_exception("reclaiming a dead peer's objects", std::current_exception());
    }
    // A dead uuid never links again (open_peer refuses it), so gone_ need not remember it:
    // it would only grow with every death over a long run.
    const std::lock_guard lock(mu_);
    gone_.erase(link->peer().uuid);
}

void ActorCore::give_up_on(const std::shared_ptr<Link>& link, const std::string& why) {
    report_error(why);
    // The peer is alive: it must learn that the link is gone when it runs again. LinkClose if
    // its control ring has room (it stopped reading, so it may not); link_lost() closes our
    // control ring's producer side in any case, which its control loop also reads as a close.
    (void)link->send([&](wire::ControlEncoder& enc) {
        return enc.link_close(wire::fb::LinkCloseReason::unresponsive, why);
    });
    link_lost(link, LinkState::failed, std::make_exception_ptr(PeerUnresponsive(why)));
}

void ActorCore::publish_links_locked() {
    auto list = std::make_shared<const LinkList>([&] {
        LinkList l;
        l.reserve(links_.size());
        for (const auto& [uuid, link] : links_) l.push_back(link);
        return l;
    }());
    {
        const std::lock_guard lock(list_mu_);
        link_list_ = std::move(list);
    }
    // [core.links] pairs with help_poll(): a new version means a new list.
    links_version_.fetch_add(1, std::memory_order::release);
}

std::shared_ptr<const ActorCore::LinkList> ActorCore::links_snapshot() const {
    // A short lock of its own (not mu_): help_poll takes it only when the version moved.
    const std::lock_guard lock(list_mu_);
    return link_list_;
}

namespace {

/// The link list a helping thread polls, held (strongly) only while it helps: help_poll runs in
/// spin loops, where even the per-thread cache's weak-pointer lock (two atomic RMWs per
/// poll) slows the watch down. Re-read when links_version_ moves.
struct HelpCursor {
    const ActorCore* core = nullptr;
    std::uint64_t version = 0;
    std::shared_ptr<const std::vector<std::shared_ptr<Link>>> list;
};
constinit thread_local HelpCursor t_help;

}  // namespace

void ActorCore::helping(bool on) noexcept {
    try {
        if (on) {
            // [core.helpers] pairs with the control loop's helped(): it sleeps unadvertised.
            const bool first = helpers_.fetch_add(1, std::memory_order::acq_rel) == 0;
            // [core.links] pairs with publish_links_locked(): read before the list.
            t_help.version = links_version_.load(std::memory_order::acquire);
            t_help.list = links_snapshot();
            t_help.core = this;
            if (first) {
                for (const auto& link : *t_help.list) link->advertise_doorbell(false);
            }
            return;
        }
        // The list is dropped on the way out, however we leave: a thread that stopped helping
        // must not keep an actor's links (and their arenas) alive.
        struct Release {
            Release() = default;
            Release(const Release&) = delete;
            Release& operator=(const Release&) = delete;
            ~Release() {
                t_help.core = nullptr;
                t_help.list.reset();
            }
        } release;
        if (helpers_.fetch_sub(1, std::memory_order::acq_rel) != 1) return;
        // The last helper out: the control loop may sleep unadvertised. Advertise for it, then
        // look once more ([wake.storeload] inside advertise_doorbell): a record published
        // before a producer could see the advertisement is found here. We read such records
        // ourselves (a wake-up would cost the loop's thread a CPU that we are on anyway) and
        // look again; only a ring that keeps filling is left to the loop, with a ring. The
        // advertisement is stored (and fenced) once: the later looks are ordered after it
        // already, and a helper that came in meanwhile withdrew it on purpose.
        // The links as they are now, not as this helper last saw them: the control loop may
        // have attached a link since and gone to sleep unadvertised on it too (it counted on
        // us), and a record on that link would then wake nobody (seen as a hang of a Start on
        // a fresh link while another context's thread helped).
        const std::shared_ptr<const LinkList> links = cached_links();
        for (const auto& link : *links) link->advertise_doorbell(true);
        for (int round = 0;; ++round) {
            bool pending = false;
            for (const auto& link : *links) pending = pending || link->control_readable();
            if (!pending) return;
            if (round == 2 || !help_poll()) {
                wake_control_loop();  // busy, or being read by someone else right now
                return;
            }
        }
    } catch (...) {
        wake_control_loop();  // allocation failure: let the loop sort it out
    }
}

std::shared_ptr<const ActorCore::LinkList> ActorCore::cached_links() const {
    // The list is re-read only when it changed: helpers run in spin loops, and reading it
    // under list_mu_ would bounce that lock between them. Held weakly: a thread-local must
    // never keep an actor's links (and their arenas) alive.
    struct Cursor {
        const ActorCore* core = nullptr;
        std::uint64_t version = 0;
        std::weak_ptr<const LinkList> list;
    };
    static thread_local Cursor cursor;
    // [core.links] pairs with publish_links_locked(): a new version means a new list.
    const std::uint64_t version = links_version_.load(std::memory_order::acquire);
    std::shared_ptr<const LinkList> list;
    if (cursor.core == this && cursor.version == version) list = cursor.list.lock();
    if (!list) {
        list = links_snapshot();
        cursor.list = list;
        cursor.core = this;
        cursor.version = version;
    }
    return list;
}

bool ActorCore::help_poll() noexcept {
    std::shared_ptr<const LinkList> list;  // only outside a helping scope (see HelpCursor)
    if (t_help.core == this) {
        // [core.links] pairs with publish_links_locked(): a new version means a new list.
        const std::uint64_t version = links_version_.load(std::memory_order::acquire);
        if (version != t_help.version) {
            try {
                t_help.list = links_snapshot();
                t_help.version = version;
            } catch (...) {
                return false;  // the list we hold still works; the next poll tries again
            }
        }
    } else {
        list = cached_links();
    }
    const LinkList& links = t_help.core == this ? *t_help.list : *list;
    bool worked = false;
    for (const auto& link : links) {
        try {
            worked = link->read_control([&](const wire::ControlView& msg) { dispatch(link, msg); },
                                        kRecordsPerPass, /*wait_for_lock=*/false) != 0 ||
                     worked;
        } catch (...) {
            link_error(link, std::current_exception());
            worked = true;
        }
    }
    return worked;
}

bool ActorCore::help_link(const std::shared_ptr<Link>& link) noexcept {
    if (!link->control_readable()) return false;  // the shared words only: cheap in a spin
    try {
        return link->read_control([&](const wire::ControlView& msg) { dispatch(link, msg); },
                                  kRecordsPerPass, /*wait_for_lock=*/false) != 0;
    } catch (...) {
        link_error(link, std::current_exception());
        return true;
    }
}

// ---- control loop ----

void ActorCore::control_loop() noexcept {
    const NonBlockingThreadMark mark;
    shm::WakeSlot& bell = *wake_table_.slot(doorbell_);
    for (;;) {
        // [wake.observe]: read before the pass, so a ring during the pass ends the wait.
        const std::uint32_t seen = bell.counter.load(std::memory_order::acquire);
        bool worked = false;
        try {
            worked = pass();
        } catch (...) {
            report_exception("control loop", std::current_exception());
        }
        // [core.stop] pairs with shutdown(): everything queued before it was flushed above.
        if (stop_.load(std::memory_order::acquire)) break;
        enum class Sleep : std::uint8_t { no, unadvertised, advertised };
        Sleep sleep = Sleep::no;
        {
            // The list is dropped before sleeping: a lost link must not stay alive (with its
            // mappings) while the loop sleeps.
            const std::shared_ptr<const LinkList> list = links_snapshot();
            const LinkList& links = *list;
            const auto pending = [&] {
                // [wake.observe] (acquire): what a ringer published before is visible after.
                if (bell.counter.load(std::memory_order::acquire) != seen) return true;
                for (const auto& link : links) {
                    if (link->control_readable()) return true;
                }
                return false;
            };
            // [core.helpers]: threads that read the rings while they spin (help_poll).
            const auto helped = [&] { return helpers_.load(std::memory_order::acquire) > 0; };
            if (worked && options_.spin_before_sleep > Duration::zero() && !helped()) {
                // After activity, watch the rings and the doorbell a little before sleeping:
                // the next record of an exchange usually follows within microseconds
                // (ActorOptions). Producers do not ring us meanwhile (we have not advertised),
                // so look at the rings themselves.
                const auto until = Clock::now() + options_.spin_before_sleep;
                Backoff backoff;
                while (!pending() && (!backoff.time_to_check() || Clock::now() < until) &&
                       !helped()) {
                    backoff.pause();
                }
            }
            if (pending()) continue;
            if (helped()) {
                // Others read the rings now and withdrew the doorbell (producers then never
                // pay a wake for us). The last helper out advertises it again and rings it if
                // a record is waiting; a ring after `seen` was read ends the wait at once.
                sleep = Sleep::unadvertised;
            } else {
                // Advertise the doorbell in every inbound control ring, then look once more:
                // a record published before a producer could see the advertisement is found
                // here, one published after it rings the bell ([wake.storeload] both sides).
                for (const auto& link : links) link->advertise_doorbell(true);
                sleep = pending() ? Sleep::no : Sleep::advertised;
                if (sleep == Sleep::no) {
                    for (const auto& link : links) link->advertise_doorbell(false);
                }
            }
        }
        if (sleep == Sleep::no) continue;
        counters_.add(shm::ActorCounter::control_loop_sleeps);
        (void)shm::futex_wait(bell.counter, seen, Duration::max());
        if (sleep == Sleep::advertised) {
            const std::shared_ptr<const LinkList> list = links_snapshot();
            for (const auto& link : *list) link->advertise_doorbell(false);
        }
    }
}

bool ActorCore::pass() {
    std::vector<std::function<void()>> posted;
    {
        const std::lock_guard lock(mu_);
        posted.swap(posted_);
    }
    bool worked = !posted.empty();
    for (auto& fn : posted) {
        try {
            fn();
        } catch (...) {
            // One failing event (e.g. bad_alloc) must not lose the others, such as a death.
            report_exception("control loop event", std::current_exception());
        }
    }
    // [link.epoch] pairs with [link.epoch] in make_link(): a peer's arena exists before.
    const std::uint64_t epoch = record_.segment().links_epoch().load(std::memory_order::acquire);
    // [core.rescan] pairs with the store in link_lost(): a new arena of a peer whose link just
    // ended was skipped by an earlier scan (the old link was still there): look again.
    if (epoch != seen_epoch_ || rescan_links_.exchange(false, std::memory_order::acq_rel)) {
        scan_links();  // if it throws, the same epoch is scanned again next pass
        seen_epoch_ = epoch;
        worked = true;
    }
    const std::shared_ptr<const LinkList> links = links_snapshot();  // keeps the list alive
    std::uint64_t outbox_depth = 0;
    for (const auto& link : *links) {
        worked = service_link(link) || worked;
        outbox_depth += link->outbox_depth_approx();
    }
    // The control loop is the one updater of the level (writer table, actor_counters.hpp).
    counters_.set(shm::ActorCounter::outbox_depth, outbox_depth);
    counters_.raise(shm::ActorCounter::outbox_high_water, outbox_depth);
    return worked;
}

bool ActorCore::service_link(const std::shared_ptr<Link>& link) {
    try {
        if (!link->peer_attached() && !link->attach_peer(names_)) {
            (void)link->flush();
            if (const std::exception_ptr broken = link->out_failure()) {
                std::rethrow_exception(broken);
            }
            return false;
        }
        const auto dispatch_one = [&](const wire::ControlView& msg) { dispatch(link, msg); };
        const std::size_t n = link->read_control(dispatch_one, kRecordsPerPass);
        if (n == kRecordsPerPass) wake_control_loop();  // more to read: come back next pass
        (void)link->flush();
        // The peer corrupted the consumer words of our control ring (seen by any sender).
        if (const std::exception_ptr broken = link->out_failure()) std::rethrow_exception(broken);
        // [ring.producer_close]: records written before the close are visible once we see it;
        // read once more, since the first read may have looked at the tail before the close.
        if (n == 0 && link->peer_closed_control()) {
            if (link->read_control(dispatch_one, kRecordsPerPass) == 0) {
                link_lost(link, LinkState::closed,
                          std::make_exception_ptr(TransportClosed(
                              "actor " + link->peer().to_string() + " closed its link to us")));
            } else {
                wake_control_loop();  // the records before the close now, the close next pass
            }
            return true;
        }
        return n != 0;
    } catch (...) {
        link_error(link, std::current_exception());
        return true;
    }
}

void ActorCore::fail_link_later(const std::shared_ptr<Link>& link, std::exception_ptr error) {
    post([this, weak = std::weak_ptr<Link>(link), error = std::move(error)] {
        if (const std::shared_ptr<Link> l = weak.lock()) link_error(l, error);
    });
}

void ActorCore::link_error(const std::shared_ptr<Link>& link,
                           const std::exception_ptr& error) noexcept {
    // The log line names the peer (issue 9: a corrupt peer is logged); once per link, since a
    // link that failed already ignores the rest.
    const auto log = [&](const std::exception_ptr& why) {
        if (link->state() == LinkState::failed || link->state() == LinkState::closed ||
            link->state() == LinkState::dead) {
            return;
        }
        try {
            std::rethrow_exception(why);
        } catch (const std::exception& e) {
            // e.what() starts with "link to <peer> failed: ".
            report_error(e.what());
        } catch (...) {
        }
    };
    try {
        std::rethrow_exception(error);
    } catch (const LayoutError& e) {
        // A version mismatch keeps its type (it is not corruption); the text names the peer.
        try {
            const std::exception_ptr why = std::make_exception_ptr(
                LayoutError("link to " + link->peer().to_string() + " failed: " + e.what()));
            log(why);
            link_lost(link, LinkState::failed, why);
        } catch (...) {
            report_exception("failing a link", std::current_exception());
        }
    } catch (const std::exception& e) {
        // A corrupt record or ring fails this link only (DESIGN.md §2 trust boundary).
        try {
            const std::string prefix = "link to " + link->peer().to_string() + " failed: ";
            const bool named = std::string_view(e.what()).starts_with(prefix);
            const std::exception_ptr why =
                named ? error : std::make_exception_ptr(ProtocolError(prefix + e.what()));
            if (link->state() != LinkState::failed && link->state() != LinkState::closed &&
                link->state() != LinkState::dead) {
                counters_.add(shm::ActorCounter::protocol_errors);
            }
            log(why);
            link_lost(link, LinkState::failed, why);
        } catch (...) {
            report_exception("failing a link", std::current_exception());
        }
    } catch (...) {
        report_exception("reading a control ring", std::current_exception());
    }
}

void ActorCore::dispatch(const std::shared_ptr<Link>& link, const wire::ControlView& msg) {
    namespace fb = wire::fb;
    const Uuid& peer = link->peer().uuid;
    const auto context = [&](const fb::Cid* cid) {
        return find_context(peer, wire::from_fb(*cid));
    };
    switch (msg.type()) {
        case fb::ControlBody::Start:
            on_start(link, *msg.as<fb::Start>());
            return;
        case fb::ControlBody::StartAck: {
            const auto* m = msg.as<fb::StartAck>();
            if (auto ctx = context(m->cid())) ctx->on_start_ack(settings_of(m->options()));
            return;
        }
        case fb::ControlBody::Started: {
            const auto* m = msg.as<fb::Started>();
            if (auto ctx = context(m->cid())) ctx->on_started(wire::from_fb(m->value()));
            return;
        }
        case fb::ControlBody::Stop: {
            const auto* m = msg.as<fb::Stop>();
            if (auto ctx = context(m->cid())) ctx->on_stop(m->data_seq());
            return;
        }
        case fb::ControlBody::Return: {
            const auto* m = msg.as<fb::Return>();
            if (auto ctx = context(m->cid())) {
                ctx->on_return(m->data_seq(), wire::from_fb(m->value()));
            }
            return;
        }
        case fb::ControlBody::Error: {
            const auto* m = msg.as<fb::Error>();
            if (auto ctx = context(m->cid())) ctx->on_error(*m);
            return;
        }
        case fb::ControlBody::CancelRequest:
            on_cancel_request(link, *msg.as<fb::CancelRequest>());
            return;
        case fb::ControlBody::CancelAck: {
            const auto* m = msg.as<fb::CancelAck>();
            std::shared_ptr<ContextState> ctx;
            {
                const std::lock_guard lock(mu_);
                const auto it = requests_.find(m->request_id());
                if (it != requests_.end()) ctx = it->second.lock();
            }
            if (ctx) {
                ctx->on_cancel_ack(m->request_id(), m->found());
                return;
            }
            bool answered = false;
            {
                const std::lock_guard lock(mu_);
                const auto it = actor_requests_.find(m->request_id());
                // Only from the link the request went out on: another peer cannot answer it.
                if (it != actor_requests_.end() && it->second->link == link) {
                    it->second->done = true;
                    it->second->found = m->found();
                    answered = true;
                }
            }
            if (answered) actor_cancel_cv_.notify_all();
            return;
        }
        case fb::ControlBody::StreamOpen: {
            const auto* m = msg.as<fb::StreamOpen>();
            const shm::CarveDescriptor d{m->offset(), m->size_bytes(), m->generation()};
            if (auto ctx = context(m->cid())) {
                ctx->on_stream_open(d);
            } else if (const shm::ArenaView* arena = link->peer_arena()) {
                arena->detach(d);  // the context ended: the producer may reuse the carve
            }
            return;
        }
        case fb::ControlBody::LinkOpen:
            on_link_open(link, *msg.as<fb::LinkOpen>());
            return;
        case fb::ControlBody::LinkClose: {
            const auto* m = msg.as<fb::LinkClose>();
            const std::string detail = m->detail() != nullptr ? m->detail()->str() : "";
            link_lost(link, LinkState::closed,
                      std::make_exception_ptr(TransportClosed(
                          "actor " + link->peer().to_string() + " closed the link (" +
                          fb::EnumNameLinkCloseReason(m->reason()) +
                          (detail.empty() ? "" : ": " + detail) + ")")));
            return;
        }
        case fb::ControlBody::Heartbeat:
        case fb::ControlBody::NONE:
            return;
    }
}

void ActorCore::on_link_open(const std::shared_ptr<Link>& link, const wire::fb::LinkOpen& open) {
    const wire::UidRef sender = wire::from_fb(*open.sender());
    if (open.layout_version() != shm::kLayoutVersion ||
        open.protocol_version() != shm::kProtocolVersion) {
        (void)link->send([](wire::ControlEncoder& enc) {
            return enc.link_close(wire::fb::LinkCloseReason::version_mismatch, "");
        });
        link_lost(link, LinkState::failed,
                  std::make_exception_ptr(
                      LayoutError("actor " + link->peer().to_string() + " speaks layout version " +
                                  std::to_string(open.layout_version()) + ", protocol version " +
                                  std::to_string(open.protocol_version()) + "; ours are " +
                                  std::to_string(shm::kLayoutVersion) + " and " +
                                  std::to_string(shm::kProtocolVersion))));
        return;
    }
    if (sender.uuid != link->peer().uuid) {
        link_lost(
            link, LinkState::failed,
            std::make_exception_ptr(ProtocolError("link to " + link->peer().to_string() +
                                                  ": LinkOpen names " + sender.uuid.to_hex())));
        return;
    }
    if (!link->mark_up()) return;  // lost meanwhile: connect() reports its failure
    counters_.add(shm::ActorCounter::links_up);
    {
        const std::lock_guard lock(mu_);  // connect() checks the state under mu_
    }
    links_cv_.notify_all();
}

void ActorCore::on_start(const std::shared_ptr<Link>& link, const wire::fb::Start& start) {
    const Cid cid = wire::from_fb(*start.cid());
    // Required fields, checked by decode_control(); the compiler cannot know that.
    const flatbuffers::String* fn_name = start.fn_name();
    const std::string fn = fn_name != nullptr ? fn_name->str() : std::string();
    const auto ship_error = [&](const std::exception_ptr& e) {
        counters_.add(shm::ActorCounter::starts_refused);
        BoxedError boxed = box(e, uid_, cid, fn);
        (void)link->send([&](wire::ControlEncoder& enc) { return enc.error(boxed.fields(0)); });
    };
    std::shared_ptr<const Exposed> exposed;  // shared, not copied: a Start copies no function
    {
        const std::lock_guard lock(mu_);
        const auto it = endpoints_.find(fn);
        if (it != endpoints_.end()) exposed = it->second;
    }
    if (!exposed) {
        ship_error(std::make_exception_ptr(
            NotExposed("function '" + fn + "' is not exposed by actor " + uid_.to_string())));
        return;
    }
    wire::ContextSettings own;
    own.msg_buffer_size = exposed->options.msg_buffer_size != 0 ? exposed->options.msg_buffer_size
                                                                : options_.msg_buffer_size;
    own.allow_overruns = exposed->options.allow_overruns;
    auto ctx = std::make_shared<ContextState>(shared_from_this(), link, Side::child, cid, fn, own,
                                              &root_scope_, nullptr);
    ctx->on_start_ack(settings_of(start.options()));  // the parent's inbound settings
    try {
        register_context(ctx);
    } catch (const Error&) {
        ship_error(std::current_exception());
        return;
    }
    // Registered: ContextState::finish() counts its end (tasks_ended), submitted or not.
    counters_.add(shm::ActorCounter::tasks_started);
    // The StartAck is owed, not written here: the context's first record (its Started,
    // Return or Error) carries it, written ahead of it in the same write section and published
    // with it (ContextState::ship). The parent needs it only with that record (it holds our
    // inbound settings for data sent after Started). A refused task (below) gets no StartAck:
    // its Error says that no task was scheduled.
    Payload args = Payload::copy(wire::from_fb(start.args()));
    SubmitRefusal why{};
    const bool submitted = pool_.try_submit(
        // `this`, not a second owner: ctx holds the core (ContextState::core_) as long as the
        // task holds ctx, and the pool is ours (shutdown waits for its tasks).
        [this, ctx, exposed = std::move(exposed), args = std::move(args)] {
            run_endpoint(ctx, exposed->endpoint, args);
        },
        &why);
    if (!submitted) {
        // finish(), not only unregister: an actor cancel that snapshotted this context waits
        // for it to end (wait_task_done), and it never runs.
        ctx->finish();
        if (why == SubmitRefusal::at_capacity) {
            ship_error(std::make_exception_ptr(
                TooManyContexts("actor " + uid_.to_string() + " runs max_endpoints=" +
                                std::to_string(options_.max_endpoints) + " endpoints already")));
        } else {
            ship_error(std::make_exception_ptr(TransportClosed(
                "actor " + uid_.to_string() + " cannot run '" + fn + "': " + to_string(why))));
        }
    }
}

void ActorCore::run_endpoint(const std::shared_ptr<ContextState>& ctx, const Endpoint& endpoint,
                             const Payload& args) {
    Context handle = ContextState::handle(ctx);
    std::optional<Payload> value;
    std::exception_ptr error;
    bool cancelled = false;
    try {
        auto r = run_in_scope(ctx->scope(), [&] { return endpoint(handle, args); });
        if (r.cancelled()) {
            cancelled = true;
        } else {
            value = std::move(*r.value);
        }
    } catch (...) {
        error = std::current_exception();
    }
    ctx->finish_child(std::move(value), error, cancelled);
}

void ActorCore::on_cancel_request(const std::shared_ptr<Link>& link,
                                  const wire::fb::CancelRequest& req) {
    (void)SHMCTX_FAULT_POINT("cancel.received");  // kill matrix: a cancel in flight
    counters_.add(shm::ActorCounter::cancels_received);
    const std::uint64_t id = req.request_id();
    const auto ack = [&](bool found) {
        (void)link->send([&](wire::ControlEncoder& enc) { return enc.cancel_ack(id, found); });
    };
    const wire::UidRef requester_ref = wire::from_fb(*req.requester());
    const Uid requester{std::string(requester_ref.name), requester_ref.uuid};
    if (const auto* target = req.target_as_ContextTarget()) {
        // Looked up under this link's peer: only the peer that opened a context can cancel it.
        auto ctx = find_context(link->peer().uuid, wire::from_fb(*target->cid()));
        if (!ctx || ctx->side() != Side::child) {
            ack(false);
            return;
        }
        if (!ctx->on_cancel_request(id, requester)) ack(true);  // it ended already
        return;
    }
    // The whole actor (Portal::cancel_actor): acked by the actor-cancel thread once every task
    // it cancelled has shipped its terminal on its own link.
    cancel_actor(requester, link, id);
}

void ActorCore::cancel_actor(const Uid& requester, std::shared_ptr<Link> ack_link,
                             std::uint64_t ack_id) {
    std::vector<std::shared_ptr<ContextState>> tasks;
    bool ack_now = false;
    bool failed_acks = false;
    std::vector<std::pair<std::shared_ptr<Link>, std::uint64_t>> acks_now;
    {
        const std::lock_guard lock(mu_);
        if (ack_link) {
            if (actor_cancel_done_) {
                ack_now = true;
            } else {
                actor_acks_.emplace_back(ack_link, ack_id);
            }
        }
        if (!actor_cancel_called_.load(std::memory_order::relaxed)) {  // relaxed: under mu_
            counters_.add(shm::ActorCounter::actor_cancels);
            cancel_caller_ = requester;
            // [core.cancel] pairs with the acquire in cancel_called(): cancel_caller_ is set.
            actor_cancel_called_.store(true, std::memory_order::release);
            // Every child task running now; a Start after this point is refused
            // (register_context checks the flag under mu_), so none escapes the snapshot.
            for (const auto& [key, ctx] : contexts_) {
                if (ctx->side() == Side::child) tasks.push_back(ctx);
            }
            bool started = false;
            if (!shutting_down_) {
                try {
                    actor_cancel_thread_ =
                        std::thread([this, requester, tasks = std::move(tasks)]() mutable {
                            run_actor_cancel(requester, std::move(tasks));
                        });
                    started = true;
                } catch (const std::system_error& e) {
                    report_error(std::string("cannot start the actor-cancel thread (") + e.what() +
                                 "): its tasks are cancelled without waiting for them");
                }
            }
            if (!started) {
                // Shutting down (shutdown() cancels and waits for every task itself), or no
                // thread: cancel through the canceller thread and answer at once, found=false
                // when the ORDER of the acks cannot be kept.
                failed_acks = !shutting_down_;
                actor_cancel_done_ = true;
                acks_now.swap(actor_acks_);
                if (failed_acks) {
                    (void)canceller_.post([this, requester] {
                        root_scope_.cancel(requester, "actor " + uid_.to_string() +
                                                          " was cancelled by " +
                                                          requester.to_string());
                    });
                }
            }
        }
    }
    if (ack_now) {
        (void)ack_link->send(
            [&](wire::ControlEncoder& enc) { return enc.cancel_ack(ack_id, true); });
    }
    for (const auto& [link, id] : acks_now) {
        (void)link->send(
            [&, id = id](wire::ControlEncoder& enc) { return enc.cancel_ack(id, !failed_acks); });
    }
    if (!acks_now.empty() || failed_acks) actor_cancel_cv_.notify_all();
}

void ActorCore::run_actor_cancel(const Uid& requester,
                                 std::vector<std::shared_ptr<ContextState>> tasks) {
    const std::string reason = "actor " + uid_.to_string() + " was cancelled by " +
                               (requester == uid_ ? std::string("itself") : requester.to_string());
    // Each task's ctxc names the requester (spec §3.6 step 1): recorded before any scope is
    // cancelled, so no task can end with another canceller.
    for (const auto& ctx : tasks) ctx->cancel_for_actor(requester, reason);
    // Parent-side bodies (and anything else nested in the root): an enclosing cancel, which
    // their open_context turns into ctx.cancel() of their remote task (the cascade).
    root_scope_.cancel(requester, reason);
    for (const auto& ctx : tasks) ctx->wait_task_done();
    std::vector<std::pair<std::shared_ptr<Link>, std::uint64_t>> acks;
    {
        const std::lock_guard lock(mu_);
        actor_cancel_done_ = true;
        acks.swap(actor_acks_);
    }
    actor_cancel_cv_.notify_all();
    // ORDER: every ctxc above was written to its link before this ack (same FIFO ring).
    for (const auto& [link, id] : acks) {
        (void)link->send(
            [&, id = id](wire::ControlEncoder& enc) { return enc.cancel_ack(id, true); });
    }
}

std::optional<Uid> ActorCore::cancel_caller() const {
    const std::lock_guard lock(mu_);
    return cancel_caller_;
}

bool ActorCore::wait_cancelled(Deadline deadline) {
    std::unique_lock lock(mu_);
    const auto done = [&] { return actor_cancel_done_; };
    if (deadline.is_infinite()) {
        actor_cancel_cv_.wait(lock, done);
        return true;
    }
    return actor_cancel_cv_.wait_until(lock, deadline.at(), done);
}

bool ActorCore::request_actor_cancel(const std::shared_ptr<Link>& link, Deadline deadline) {
    // Called, whether or not it can be sent: Portal::cancel_called() means the call was made.
    link->set_cancel_called();
    if (link->state() != LinkState::up) return false;  // spec §3.6: a disconnected channel
    counters_.add(shm::ActorCounter::actor_cancel_requests);
    const std::uint64_t id = next_request_id();
    auto request = std::make_shared<ActorRequest>();
    request->link = link;
    {
        const std::lock_guard lock(mu_);
        actor_requests_[id] = request;
    }
    const bool sent = link->send([&](wire::ControlEncoder& enc) {
        return enc.cancel_actor(id, wire::UidRef{uid_.name, uid_.uuid});
    });
    std::unique_lock lock(mu_);
    if (sent) {
        // Shielded: no stop token, only the deadline (spec §3.6). The control loop answers
        // (CancelAck), and link_lost() ends the wait when the link goes.
        const auto done = [&] { return request->done || link->state() != LinkState::up; };
        if (deadline.is_infinite()) {
            actor_cancel_cv_.wait(lock, done);
        } else {
            (void)actor_cancel_cv_.wait_until(lock, deadline.at(), done);
        }
    }
    actor_requests_.erase(id);
    return request->done && request->found;
}

void ActorCore::fail_actor_requests(const Link* link) {
    {
        const std::lock_guard lock(mu_);
        for (auto& [id, request] : actor_requests_) {
            if (link == nullptr || request->link.get() == link) request->done = true;
        }
    }
    actor_cancel_cv_.notify_all();
}

}  // namespace shmctx::detail
