// example.cpp: the C++ wrapper (epoll_loop.hpp) in one sitting: a socketpair
// driven through a callback, a repeating timer, an echo server round trip on
// the same loop, an error as an exception, and a callback's exception coming
// out of run().
//
//     g++ -std=c++17 -Wall -Wextra -Werror -Iinclude -Ic-examples/cpp
//         c-examples/cpp/example.cpp -Ltarget/release -lepoll_loop
//
// (`make examples` builds it as target/c-examples/cpp_example.) Prints what
// happens and exits 0 when every step did what it should.

#include "epoll_loop.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace {

// A socket fd closed when it goes out of scope.
struct fd_guard {
    int fd;
    explicit fd_guard(int f) : fd(f) {}
    fd_guard(const fd_guard &) = delete;
    fd_guard &operator=(const fd_guard &) = delete;
    ~fd_guard()
    {
        if (fd >= 0)
            close(fd);
    }
};

void expect(bool ok, const char *what)
{
    if (!ok)
        throw std::runtime_error(std::string("check failed: ") + what);
}

void socketpair_and_timer()
{
    eloop::loop loop;
    int sv[2];
    expect(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    fd_guard a(sv[0]), b(sv[1]);

    std::string received;
    eloop::io reader;
    reader = loop.watch(a.fd, eloop::in, [&](int fd, std::uint32_t) {
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0)
            received.append(buf, static_cast<std::size_t>(n));
        if (received.size() >= 3 * 5)
            reader.reset(); // unregister from inside its own callback
    });

    int ticks = 0;
    eloop::timer tick = loop.start_timer(std::chrono::milliseconds(1), std::chrono::milliseconds(1), [&] {
        ++ticks;
        expect(write(b.fd, "tick ", 5) == 5, "write");
        if (ticks == 3)
            tick.reset(); // a repeating timer stops itself
    });

    bool stopped = loop.run(); // returns once nothing is registered or pending
    std::printf("socketpair: %s(%d ticks, run returned %s)\n", received.c_str(), ticks,
                stopped ? "stopped" : "idle");
    expect(!stopped && ticks == 3 && received == "tick tick tick ", "socketpair and timer");
}

void echo_round_trip()
{
    eloop::loop loop;
    eloop::echo_server::config cfg;
    cfg.c.port = 0; // ephemeral
    // Attached: served by this thread's loop, like the client below.
    eloop::echo_server server = eloop::echo_server::attach(loop, cfg);

    fd_guard client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    expect(client.fd >= 0, "socket");
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    expect(connect(client.fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0, "connect");
    const char msg[] = "hello, echo";
    expect(send(client.fd, msg, sizeof msg - 1, 0) == static_cast<ssize_t>(sizeof msg - 1), "send");

    std::string echoed;
    eloop::io watch = loop.watch(client.fd, eloop::in, [&](int fd, std::uint32_t) {
        char buf[64];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0)
            echoed.append(buf, static_cast<std::size_t>(n));
        if (n <= 0 || echoed.size() >= sizeof msg - 1)
            loop.stop();
    });
    eloop::timer deadline = loop.call_later(std::chrono::seconds(5), [&] { loop.stop(); });
    expect(loop.run(), "run stopped");

    echo_server_stats st = server.stats();
    std::printf("echo: \"%s\" on port %d (%llu bytes in, %llu out)\n", echoed.c_str(), server.port(),
                static_cast<unsigned long long>(st.bytes_in), static_cast<unsigned long long>(st.bytes_out));
    expect(echoed == msg, "echoed bytes");
    watch.reset();
    server.stop(); // before the loop goes (it would anyway: declared after it)
}

void errors_are_exceptions()
{
    eloop::loop loop;
    int sv[2];
    expect(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    fd_guard a(sv[0]), b(sv[1]);
    eloop::io first = loop.watch(a.fd, eloop::in, [](int, std::uint32_t) {});
    try {
        eloop::io second = loop.watch(a.fd, eloop::in, [](int, std::uint32_t) {});
        expect(false, "registering twice must throw");
    } catch (const std::system_error &e) {
        std::printf("error: %s (errno %d, EEXIST: %s)\n", e.what(), e.code().value(),
                    e.code() == std::errc::file_exists ? "yes" : "no");
        expect(e.code() == std::errc::file_exists, "EEXIST");
    }

    // A callback's exception does not cross the C library; run() rethrows it.
    expect(write(b.fd, "x", 1) == 1, "write");
    first = loop.watch(b.fd, eloop::out, [](int, std::uint32_t) { throw std::runtime_error("from a callback"); });
    try {
        loop.run();
        expect(false, "run must rethrow");
    } catch (const std::runtime_error &e) {
        std::printf("callback exception: %s\n", e.what());
        expect(std::strcmp(e.what(), "from a callback") == 0, "the callback's exception");
    }
}

} // namespace

int main()
{
    try {
        std::printf("epoll_loop %s\n", epoll_loop_version_string());
        socketpair_and_timer();
        echo_round_trip();
        errors_are_exceptions();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "example failed: %s\n", e.what());
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
