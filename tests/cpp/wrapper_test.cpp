// Tests of c-examples/cpp/epoll_loop.hpp, run by tests/cpp.rs under ASan+UBSan:
// move-only types, no operator new per dispatched event, callbacks that reset
// their own registration, exceptions out of callbacks, errno in
// std::system_error, timers, stop from another thread, the echo server.
// Prints "N passed, 0 failed" and exits 0 when every check holds.

#include "epoll_loop.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ------------------------------------------------------------ allocation counter

static std::atomic<long> g_news{0};

void *operator new(std::size_t n)
{
    g_news.fetch_add(1, std::memory_order_relaxed);
    if (void *p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

// ------------------------------------------------------------ harness

static int g_passed, g_failed;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) {                                                                       \
            g_passed++;                                                                   \
        } else {                                                                          \
            g_failed++;                                                                   \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                                 \
    } while (0)

template <class T>
constexpr bool move_only = !std::is_copy_constructible<T>::value && !std::is_copy_assignable<T>::value &&
                           std::is_nothrow_move_constructible<T>::value &&
                           std::is_nothrow_move_assignable<T>::value;
static_assert(move_only<eloop::loop>, "loop is move-only");
static_assert(move_only<eloop::io>, "io is move-only");
static_assert(move_only<eloop::timer>, "timer is move-only");
static_assert(move_only<eloop::echo_server>, "echo_server is move-only");

struct pair {
    int a = -1, b = -1;
    pair()
    {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::runtime_error("socketpair");
        a = sv[0];
        b = sv[1];
    }
    pair(const pair &) = delete;
    pair &operator=(const pair &) = delete;
    ~pair()
    {
        close(a);
        close(b);
    }
};

template <class F>
static int errno_of(F f)
{
    try {
        f();
    } catch (const std::system_error &e) {
        if (e.code().category() != std::generic_category())
            return -1;
        return e.code().value();
    }
    return 0;
}

// ------------------------------------------------------------ tests

static void no_allocation_per_event()
{
    eloop::loop loop;
    pair p;
    long reads = 0;
    eloop::io r = loop.watch(p.a, eloop::in, [&](int fd, std::uint32_t) {
        char c;
        while (read(fd, &c, 1) == 1)
            reads++;
    });
    eloop::timer t = loop.start_timer(std::chrono::milliseconds(0), std::chrono::milliseconds(1), [] {});
    CHECK(write(p.b, "x", 1) == 1);
    loop.poll(0); // warm-up
    long before = g_news.load();
    CHECK(before > 0); // the counter sees the wrapper's allocations (watch, start_timer)
    for (int i = 0; i < 1000; i++) {
        if (write(p.b, "x", 1) != 1)
            break;
        loop.poll(-1);
    }
    long after = g_news.load();
    CHECK(reads == 1001);
    CHECK(after == before);
    if (after != before)
        std::fprintf(stderr, "%ld operator new calls during 1000 dispatches\n", after - before);
}

static void reset_inside_own_callback_and_moves()
{
    eloop::loop first;
    pair p;
    int calls = 0;
    eloop::io r;
    r = first.watch(p.a, eloop::in | eloop::out, [&](int, std::uint32_t ev) {
        calls++;
        CHECK((ev & eloop::out) != 0);
        r.reset(); // frees the stored function only after this call returns
    });
    CHECK(static_cast<bool>(r) && r.fd() == p.a);
    eloop::loop moved = std::move(first); // the registration follows the C loop
    // A moved-from loop has no C object: calls throw EINVAL, stop() does nothing.
    CHECK(first.native_handle() == nullptr);
    CHECK(errno_of([&] { first.poll(0); }) == EINVAL);
    CHECK(errno_of([&] { first.run(); }) == EINVAL);
    first.stop();
    CHECK(moved.poll(0) == 1);
    CHECK(!r && r.fd() == -1);
    CHECK(moved.poll(0) == 0 && calls == 1);

    // Move-assigning an io unregisters what it held.
    eloop::io x = moved.watch(p.a, eloop::out, [](int, std::uint32_t) {});
    eloop::io y = moved.watch(p.b, eloop::out, [](int, std::uint32_t) {});
    x = std::move(y);
    CHECK(x.fd() == p.b && !y);
    CHECK(moved.stats().registered == 1);
    CHECK(errno_of([&] { y.modify(eloop::in); }) == EINVAL);
    x.modify(eloop::in);
    CHECK(moved.poll(0) == 0);
}

static void exceptions_and_errors()
{
    eloop::loop loop;
    pair p;
    CHECK(errno_of([&] { (void)loop.watch(-1, eloop::in, [](int, std::uint32_t) {}); }) == EBADF);
    eloop::io a = loop.watch(p.a, eloop::out, [](int, std::uint32_t) { throw std::logic_error("boom"); });
    CHECK(errno_of([&] { (void)loop.watch(p.a, eloop::in, [](int, std::uint32_t) {}); }) == EEXIST);
    CHECK(errno_of([&] { (void)loop.watch(p.b, 0x40000u /* not an epoll bit */, [](int, std::uint32_t) {}); }) ==
          EINVAL);

    char path[] = "/tmp/epoll_loop_wrapper_test.XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    unlink(path);
    CHECK(errno_of([&] { (void)loop.watch(file, eloop::in, [](int, std::uint32_t) {}); }) == EPERM);
    close(file);

    bool caught = false;
    try {
        loop.poll(0);
    } catch (const std::logic_error &e) {
        caught = std::strcmp(e.what(), "boom") == 0;
    }
    CHECK(caught);
    a.reset();
    CHECK(loop.poll(0) == 0); // nothing left pending

    // From run(): the exception also ends the run.
    a = loop.watch(p.a, eloop::out, [](int, std::uint32_t) { throw 42; });
    int thrown = 0;
    try {
        loop.run();
    } catch (int v) {
        thrown = v;
    }
    CHECK(thrown == 42);

    // Re-entrant poll from a callback: EBUSY as an exception inside the
    // callback, which the wrapper carries out of the outer poll. (Reset first:
    // assigning evaluates the new watch() while the old registration stands.)
    a.reset();
    a = loop.watch(p.a, eloop::out, [&](int, std::uint32_t) { loop.poll(0); });
    CHECK(errno_of([&] { loop.poll(0); }) == EBUSY);

    // The library's own codes (not errno values) come in their own category,
    // with the code as value() and epoll_loop_strerror's text as the message.
    bool library = false;
    try {
        eloop::check(EPOLL_LOOP_EAI_NONAME, "resolve");
    } catch (const std::system_error &e) {
        library = e.code().category() == eloop::library_category() &&
                  e.code().value() == EPOLL_LOOP_EAI_NONAME &&
                  e.code().message() == epoll_loop_strerror(EPOLL_LOOP_EAI_NONAME) &&
                  std::strstr(e.what(), "host name not known") != nullptr;
    }
    CHECK(library);
    CHECK(errno_of([] { eloop::check(-EEXIST, "x"); }) == EEXIST);
}

static void timers()
{
    eloop::loop loop;
    int once = 0, never = 0, rep = 0;
    eloop::timer t1 = loop.call_later(std::chrono::milliseconds(1), [&] { once++; });
    eloop::timer t2 = loop.call_later(std::chrono::milliseconds(1), [&] { never++; });
    eloop::timer t3;
    t3 = loop.start_timer(std::chrono::milliseconds(1), std::chrono::milliseconds(1), [&] {
        if (++rep == 5)
            t3.reset();
    });
    CHECK(t1.id() != 0 && t2.id() != t1.id() && t3.pending());
    t2.reset();
    CHECK(!t2.pending());
    CHECK(loop.run() == false);
    CHECK(once == 1 && never == 0 && rep == 5);
    CHECK(t1 && !t1.pending()); // fired: still owns its function, nothing to stop
    CHECK(errno_of([&] {
              (void)loop.start_timer(std::chrono::milliseconds(-1), std::chrono::milliseconds(0), [] {});
          }) == EINVAL);
}

static void stop_from_another_thread()
{
    eloop::loop loop;
    pair p;
    eloop::io r = loop.watch(p.a, eloop::in, [](int, std::uint32_t) {});
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        loop.stop();
    });
    bool stopped = loop.run();
    t.join();
    CHECK(stopped);
}

static void echo_server_threaded()
{
    std::mutex mu;
    std::vector<std::string> lines;
    eloop::echo_server::config cfg;
    cfg.c.port = 0;
    cfg.c.threads = 2;
    cfg.log = [&](int level, const char *msg) {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back(std::to_string(level) + " " + msg);
    };
    eloop::echo_server srv = eloop::echo_server::start(cfg);
    int port = srv.port();
    CHECK(port > 0);

    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(c, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
    const std::string msg(100000, 'e');
    std::size_t sent = 0, got = 0;
    while (sent < msg.size()) {
        ssize_t n = send(c, msg.data() + sent, msg.size() - sent, 0);
        if (n <= 0)
            break;
        sent += static_cast<std::size_t>(n);
        char buf[65536];
        while (got < sent) { // read what came back so far, so neither side blocks
            ssize_t m = recv(c, buf, sizeof buf, MSG_DONTWAIT);
            if (m <= 0)
                break;
            got += static_cast<std::size_t>(m);
        }
    }
    shutdown(c, SHUT_WR);
    char buf[65536];
    ssize_t m;
    while ((m = recv(c, buf, sizeof buf, 0)) > 0)
        got += static_cast<std::size_t>(m);
    close(c);
    CHECK(sent == msg.size() && got == msg.size());
    echo_server_stats st = srv.stats();
    CHECK(st.accepted == 1 && st.bytes_in == msg.size());
    srv.stop();
    CHECK(!srv);
    CHECK(errno_of([&] { srv.stop(); }) == EINVAL);
    std::lock_guard<std::mutex> lock(mu);
    bool saw_connection = false;
    for (const std::string &l : lines)
        saw_connection |= l.find("new connection") != std::string::npos;
    CHECK(saw_connection);

    cfg.c.threads = 0;
    CHECK(errno_of([&] { (void)eloop::echo_server::start(cfg); }) == EINVAL);
}

int main()
{
    try {
        no_allocation_per_event();
        reset_inside_own_callback_and_moves();
        exceptions_and_errors();
        timers();
        stop_from_another_thread();
        echo_server_threaded();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        g_failed++;
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed != 0;
}
