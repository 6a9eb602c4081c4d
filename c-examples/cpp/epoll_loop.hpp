/*
 * epoll_loop.hpp: a header-only C++17 wrapper over the epoll-loop C API.
 *
 *     #include "epoll_loop.hpp"   // includes <epoll_loop.h>
 *     g++ -std=c++17 app.cpp $(pkg-config --cflags --libs epoll_loop)
 *
 * What it adds to the C API, and nothing more:
 *
 * - RAII, move-only owners: eloop::loop (epoll_loop_new / _free), eloop::io (a
 *   registration: epoll_loop_register / _unregister), eloop::timer
 *   (epoll_loop_timer_start / _stop), eloop::echo_server (echo_server_start or
 *   _attach / echo_server_stop). Moving never changes what the C library sees.
 * - Callbacks are std::function objects, stored once per registration or timer
 *   (one allocation when it is created); the C library gets a pointer to the
 *   stored function as its user_data, so dispatching an event allocates nothing.
 * - Errors are exceptions: every failing C call throws std::system_error whose
 *   code() is the errno in std::generic_category(), so
 *   `e.code() == std::errc::file_exists` tests for EEXIST; the library's own
 *   codes (-3000 and below: EPOLL_LOOP_EAI_*, EPOLL_LOOP_ENOTBLOCKED,
 *   EPOLL_LOOP_EFORKED) come in eloop::library_category(), with the code as
 *   value() and epoll_loop_strerror's message. Destructors and the
 *   functions marked noexcept never throw (they ignore the C return code).
 * - Exceptions thrown by your callbacks never unwind through the C library: the
 *   wrapper catches the first one, asks a running loop to stop, and rethrows it
 *   from loop::poll() or loop::run() once the C call has returned. Later
 *   exceptions from the same dispatch are dropped.
 *
 * Lifetime rules (as for the C objects; the wrapper does not reference-count):
 * an io, timer or attached echo_server must be destroyed (or reset) before the
 * loop it belongs to; declaring the loop first gets this right by itself. A
 * callback may destroy or reset its own io or timer (and any other one): the
 * stored function is freed only after it returns. A loop must not be destroyed
 * from inside one of its callbacks (the C library refuses with -EBUSY; the
 * destructor then calls std::terminate rather than leak silently).
 *
 * Threads: as in C, one thread drives a loop; loop::stop() and loop::wake() may
 * be called from any thread (and from signal handlers). A started echo_server's
 * port(), stats() and stop() may be called from any thread; its log callback
 * runs on the server's threads.
 */

#ifndef EPOLL_LOOP_HPP
#define EPOLL_LOOP_HPP

#include <epoll_loop.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

namespace eloop {

/// Event bits, the <sys/epoll.h> values (EPOLL_LOOP_* from the C header).
enum : std::uint32_t {
    in = EPOLL_LOOP_IN,
    out = EPOLL_LOOP_OUT,
    pri = EPOLL_LOOP_PRI,
    err = EPOLL_LOOP_ERR,
    hup = EPOLL_LOOP_HUP,
    rdhup = EPOLL_LOOP_RDHUP,
    et = static_cast<std::uint32_t>(EPOLL_LOOP_ET),
    oneshot = EPOLL_LOOP_ONESHOT,
    exclusive = EPOLL_LOOP_EXCLUSIVE,
};

/// The category of the library's own codes (-3000 and below, e.g.
/// EPOLL_LOOP_EAI_NONAME, EPOLL_LOOP_ENOTBLOCKED, EPOLL_LOOP_EFORKED): value()
/// is the (negative) code itself and message() is epoll_loop_strerror's text.
class library_category_t final : public std::error_category {
public:
    const char *name() const noexcept override { return "epoll_loop"; }
    std::string message(int code) const override { return epoll_loop_strerror(code); }
};

inline const std::error_category &library_category() noexcept
{
    static const library_category_t category;
    return category;
}

/// The library's codes from -3000 down are not errno values.
inline bool is_library_code(int rc) noexcept { return rc <= -3000; }

/// Throws std::system_error when rc < 0 (errno codes in std::generic_category(),
/// the library's own in eloop::library_category()); returns rc otherwise.
inline int check(int rc, const char *what)
{
    if (rc < 0) {
        if (is_library_code(rc))
            throw std::system_error(rc, library_category(), what);
        throw std::system_error(-rc, std::generic_category(), what);
    }
    return rc;
}

class loop;
class io;
class timer;
class echo_server;

namespace detail {

// What a loop's callbacks share; heap-allocated once per loop so that moving
// the loop object does not move it.
struct loop_core {
    epoll_loop *raw = nullptr;
    std::exception_ptr pending;
    bool running = false; // inside loop::run()

    void fail(std::exception_ptr e) noexcept
    {
        if (!pending)
            pending = std::move(e);
        if (running)
            epoll_loop_stop(raw);
    }

    void rethrow_pending()
    {
        if (pending)
            std::rethrow_exception(std::exchange(pending, nullptr));
    }
};

// One per registration or timer: the stored callback. `depth` counts calls in
// progress; an owner released during a call marks it `orphaned` and the
// trampoline frees it when the call returns.
template <class Fn>
struct slot {
    loop_core *core;
    Fn fn;
    int fd = -1;            // io: the registered fd
    std::uint64_t id = 0;   // timer: its id
    bool repeating = false; // timer: repeat_ms > 0
    bool done = false;      // timer: a one-shot that fired (the C loop forgot it)
    int depth = 0;
    bool orphaned = false;

    slot(loop_core *c, Fn f) : core(c), fn(std::move(f)) {}

    template <class... Args>
    void call(Args... args) noexcept
    {
        ++depth;
        try {
            fn(args...);
        } catch (...) {
            core->fail(std::current_exception());
        }
        if (--depth == 0 && orphaned)
            delete this;
    }

    // The owner lets go: free now, or after the call in progress returns.
    void release() noexcept
    {
        if (depth > 0)
            orphaned = true;
        else
            delete this;
    }
};

using io_slot = slot<std::function<void(int, std::uint32_t)>>;
using timer_slot = slot<std::function<void()>>;

struct server_state {
    ::echo_server *raw = nullptr;
    std::string host;
    std::function<void(int, const char *)> log;
};

// The C callbacks. C linkage, so their type is exactly the C typedef.
extern "C" {
inline void eloop_detail_io_cb(epoll_loop *, int fd, std::uint32_t events, void *ud)
{
    static_cast<io_slot *>(ud)->call(fd, events);
}

inline void eloop_detail_timer_cb(epoll_loop *, std::uint64_t, void *ud)
{
    auto *s = static_cast<timer_slot *>(ud);
    if (!s->repeating)
        s->done = true;
    s->call();
}

inline void eloop_detail_log_cb(int level, const char *message, void *ud)
{
    auto *st = static_cast<server_state *>(ud);
    try {
        st->log(level, message);
    } catch (...) {
        // Runs on a server thread with nowhere to rethrow to: dropped (documented).
    }
}
}

} // namespace detail

/// A registration of one fd on a loop (epoll_loop_register). Unregisters when
/// destroyed or reset. Empty when default-constructed or moved from.
class io {
public:
    using callback = std::function<void(int fd, std::uint32_t events)>;

    io() noexcept = default;
    io(io &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    io &operator=(io &&o) noexcept
    {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    io(const io &) = delete;
    io &operator=(const io &) = delete;
    ~io() { reset(); }

    /// Changes the watched events (epoll_loop_modify); re-arms a oneshot registration.
    void modify(std::uint32_t events)
    {
        check(s_ ? epoll_loop_modify(s_->core->raw, s_->fd, events) : -EINVAL, "epoll_loop_modify");
    }

    /// Unregisters (epoll_loop_unregister) and empties this object. May be
    /// called from the registration's own callback.
    void reset() noexcept
    {
        if (detail::io_slot *s = std::exchange(s_, nullptr)) {
            epoll_loop_unregister(s->core->raw, s->fd);
            s->release();
        }
    }

    /// The registered fd, or -1 when empty.
    int fd() const noexcept { return s_ ? s_->fd : -1; }
    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    friend class loop;
    explicit io(detail::io_slot *s) noexcept : s_(s) {}
    detail::io_slot *s_ = nullptr;
};

/// A timer (epoll_loop_timer_start). Stops when destroyed or reset.
class timer {
public:
    timer() noexcept = default;
    timer(timer &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    timer &operator=(timer &&o) noexcept
    {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    timer(const timer &) = delete;
    timer &operator=(const timer &) = delete;
    ~timer() { reset(); }

    /// Stops the timer (epoll_loop_timer_stop, unless it already fired for the
    /// last time) and empties this object. May be called from its own callback.
    void reset() noexcept
    {
        if (detail::timer_slot *s = std::exchange(s_, nullptr)) {
            if (!s->done)
                epoll_loop_timer_stop(s->core->raw, s->id);
            s->release();
        }
    }

    /// The C timer id (never reused within the loop's life), or 0 when empty.
    std::uint64_t id() const noexcept { return s_ ? s_->id : 0; }
    /// True while the callback may still run: not reset, and not a one-shot that fired.
    bool pending() const noexcept { return s_ && !s_->done; }
    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    friend class loop;
    explicit timer(detail::timer_slot *s) noexcept : s_(s) {}
    detail::timer_slot *s_ = nullptr;
};

/// An event loop (epoll_loop_new / epoll_loop_free).
class loop {
public:
    /// A loop on a new epoll instance. Throws std::system_error.
    loop() : core_(new detail::loop_core)
    {
        check(epoll_loop_new(&core_->raw), "epoll_loop_new");
    }

    /// A loop on an existing epoll fd, which it then owns (epoll_loop_from_fd).
    static loop from_fd(int epfd)
    {
        std::unique_ptr<detail::loop_core> core(new detail::loop_core);
        check(epoll_loop_from_fd(epfd, &core->raw), "epoll_loop_from_fd");
        return loop(std::move(core));
    }

    loop(loop &&) noexcept = default;
    loop &operator=(loop &&o) noexcept
    {
        if (this != &o) {
            destroy();
            core_ = std::move(o.core_);
        }
        return *this;
    }
    loop(const loop &) = delete;
    loop &operator=(const loop &) = delete;
    ~loop() { destroy(); }

    /// Watches `fd` for `events`; `cb(fd, events)` runs on each event.
    [[nodiscard]] io watch(int fd, std::uint32_t events, io::callback cb)
    {
        std::unique_ptr<detail::io_slot> s(new detail::io_slot(core_.get(), std::move(cb)));
        s->fd = fd;
        check(epoll_loop_register(native_handle(), fd, events, detail::eloop_detail_io_cb, s.get()),
              "epoll_loop_register");
        return io(s.release());
    }

    /// Runs `cb` after `after`, then every `repeat` (zero: once).
    [[nodiscard]] timer start_timer(std::chrono::milliseconds after, std::chrono::milliseconds repeat,
                                    std::function<void()> cb)
    {
        if (after.count() < 0 || repeat.count() < 0)
            check(-EINVAL, "epoll_loop_timer_start");
        std::unique_ptr<detail::timer_slot> s(new detail::timer_slot(core_.get(), std::move(cb)));
        s->repeating = repeat.count() > 0;
        check(epoll_loop_timer_start(native_handle(), static_cast<std::uint64_t>(after.count()),
                                     static_cast<std::uint64_t>(repeat.count()),
                                     detail::eloop_detail_timer_cb, s.get(), &s->id),
              "epoll_loop_timer_start");
        return timer(s.release());
    }

    /// A one-shot timer.
    [[nodiscard]] timer call_later(std::chrono::milliseconds after, std::function<void()> cb)
    {
        return start_timer(after, std::chrono::milliseconds(0), std::move(cb));
    }

    /// Waits up to `timeout_ms` (-1 forever, 0 not at all) and dispatches once;
    /// returns the number of callbacks run. Rethrows a callback's exception.
    int poll(int timeout_ms = -1)
    {
        int rc = epoll_loop_poll(native_handle(), timeout_ms);
        if (core_)
            core_->rethrow_pending();
        return check(rc, "epoll_loop_poll");
    }

    /// Polls until stop() (returns true) or nothing is left to wait for (false).
    /// Rethrows a callback's exception (which also ends the run).
    bool run()
    {
        if (!core_)
            check(-EINVAL, "epoll_loop_run"); // moved from
        bool outer = std::exchange(core_->running, true);
        int rc = epoll_loop_run(core_->raw);
        core_->running = outer;
        core_->rethrow_pending();
        return check(rc, "epoll_loop_run") == 1;
    }

    /// Makes run() return after the current iteration. Any thread, signal-safe.
    void stop() noexcept { epoll_loop_stop(native_handle()); }
    /// Makes a blocked poll() return. Any thread, signal-safe.
    void wake() noexcept { epoll_loop_wake(native_handle()); }

    /// The epoll fd (to nest this loop in another poller).
    int fileno() const { return check(epoll_loop_fileno(native_handle()), "epoll_loop_fileno"); }

    epoll_loop_stats stats() const
    {
        epoll_loop_stats st{};
        check(epoll_loop_get_stats(native_handle(), &st), "epoll_loop_get_stats");
        return st;
    }

    /// The C object, for calls the wrapper does not cover (NULL when moved
    /// from: every call then throws EINVAL). Still owned by this loop.
    epoll_loop *native_handle() const noexcept { return core_ ? core_->raw : nullptr; }

private:
    friend class echo_server;
    explicit loop(std::unique_ptr<detail::loop_core> core) noexcept : core_(std::move(core)) {}

    void destroy() noexcept
    {
        if (core_ && epoll_loop_free(core_->raw) == -EBUSY)
            std::terminate(); // destroyed inside its own callback: a bug (see the top of this file)
        core_.reset();
    }

    std::unique_ptr<detail::loop_core> core_;
};

/// An echo server (echo_server_start / echo_server_attach ... echo_server_stop).
class echo_server {
public:
    /// The C configuration with its defaults (echo_server_config_init), plus
    /// owned storage for the host string and the log callback.
    struct config {
        echo_server_config c; ///< every field except host, log and log_user_data is used as is
        std::string host;     ///< default "127.0.0.1"
        /// Optional; called as log(level, message) on the server's thread(s).
        /// Must be thread-safe for threads > 1. Exceptions it throws are dropped.
        std::function<void(int level, const char *message)> log;

        config() : c()
        {
            echo_server_config_init(&c);
            host = c.host ? c.host : "127.0.0.1";
        }
    };

    echo_server() noexcept = default;

    /// Starts a server on its own thread(s); listening when this returns.
    static echo_server start(config cfg) { return echo_server(nullptr, std::move(cfg)); }

    /// Starts a server on `l`, served while `l` is polled. Stop it before `l` goes.
    static echo_server attach(loop &l, config cfg) { return echo_server(&l, std::move(cfg)); }

    echo_server(echo_server &&) noexcept = default;
    echo_server &operator=(echo_server &&o) noexcept
    {
        if (this != &o) {
            reset();
            st_ = std::move(o.st_);
        }
        return *this;
    }
    echo_server(const echo_server &) = delete;
    echo_server &operator=(const echo_server &) = delete;
    ~echo_server() { reset(); }

    /// The bound port.
    int port() const { return check(echo_server_port(raw()), "echo_server_port"); }

    echo_server_stats stats() const
    {
        echo_server_stats st{};
        check(echo_server_get_stats(raw(), &st), "echo_server_get_stats");
        return st;
    }

    /// Graceful stop (echo_server_stop); throws on error (e.g. EDEADLK from the
    /// server's own log callback), and then the server keeps running.
    void stop()
    {
        check(st_ ? echo_server_stop(st_->raw) : -EINVAL, "echo_server_stop");
        st_.reset();
    }

    explicit operator bool() const noexcept { return st_ != nullptr; }

private:
    echo_server(loop *l, config cfg) : st_(new detail::server_state)
    {
        st_->host = std::move(cfg.host);
        st_->log = std::move(cfg.log);
        echo_server_config c = cfg.c;
        c.host = st_->host.c_str();
        c.log = st_->log ? detail::eloop_detail_log_cb : nullptr;
        c.log_user_data = st_.get();
        if (l)
            check(echo_server_attach(l->native_handle(), &c, &st_->raw), "echo_server_attach");
        else
            check(echo_server_start(&c, &st_->raw), "echo_server_start");
    }

    ::echo_server *raw() const noexcept { return st_ ? st_->raw : nullptr; }

    void reset() noexcept
    {
        if (st_ && echo_server_stop(st_->raw) != 0)
            (void)st_.release(); // could not stop (EDEADLK): leak the state its threads use
        st_.reset();
    }

    std::unique_ptr<detail::server_state> st_;
};

} // namespace eloop

#endif /* EPOLL_LOOP_HPP */
