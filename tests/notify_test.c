/*
 * Tests of lib/notify against a fake service manager: a unix datagram
 * socket the test binds and names in NOTIFY_SOCKET. READY=1 carries our
 * pid, STOPPING=1 and STATUS= arrive as sent, the watchdog beats at most
 * once per half of WATCHDOG_USEC however often it is called, stays silent
 * without WATCHDOG_USEC or for another WATCHDOG_PID, and nothing is sent
 * (and nothing fails) without NOTIFY_SOCKET.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "notify.h"

static int sock = -1;
static char sock_path[108];

static void fake_manager_up(void)
{
    snprintf(sock_path, sizeof(sock_path), "/tmp/ws-notify-test-%ld", (long)getpid());
    unlink(sock_path);
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(sock >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
    cr_assert_eq(bind(sock, (struct sockaddr *)&a, sizeof(a)), 0);
    setenv("NOTIFY_SOCKET", sock_path, 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    ws_notify_reset();
}

static void fake_manager_down(void)
{
    if (sock >= 0) {
        close(sock);
        sock = -1;
    }
    unlink(sock_path);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    ws_notify_reset();
}

/* The next datagram within ms into buf; false if none came. */
static bool recv_within(char *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = sock, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) {
        return false;
    }
    ssize_t n = recv(sock, buf, cap - 1, 0);
    cr_assert(n >= 0);
    buf[n] = '\0';
    return true;
}

TestSuite(notify, .init = fake_manager_up, .fini = fake_manager_down);

Test(notify, ready_carries_our_pid)
{
    char buf[256], want[64];
    ws_notify_ready();
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    snprintf(want, sizeof(want), "READY=1\nMAINPID=%ld", (long)getpid());
    cr_expect_str_eq(buf, want);
}

Test(notify, stopping_and_status_arrive_as_sent)
{
    char buf[512];
    ws_notify_status("serving http port %d", 8080);
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    cr_expect_str_eq(buf, "STATUS=serving http port 8080");
    ws_notify_stopping();
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    cr_expect_str_eq(buf, "STOPPING=1");
}

Test(notify, long_status_is_cut)
{
    char buf[1024], text[600];
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    ws_notify_status("%s", text);
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    cr_expect_eq(strlen(buf), strlen("STATUS=") + 255);
}

Test(notify, watchdog_beats_at_most_once_per_half_period)
{
    setenv("WATCHDOG_USEC", "200000", 1); /* beat every 100 ms */
    ws_notify_reset();
    cr_expect_eq(ws_notify_watchdog_period_us(), 100000);
    char buf[64];
    int beats = 0;
    int64_t t0 = ws_clock_mono_ms();
    int64_t first = -1, last = -1;
    while (ws_clock_mono_ms() - t0 < 550) {
        ws_notify_watchdog(); /* a loop turning every ms */
        while (recv_within(buf, sizeof(buf), 0)) {
            cr_expect_str_eq(buf, "WATCHDOG=1");
            last = ws_clock_mono_ms();
            first = first < 0 ? last : first;
            beats++;
        }
        struct timespec ms = {.tv_nsec = 1000000};
        nanosleep(&ms, NULL);
    }
    /* 550 ms at one beat per 100 ms: the first at once, then about 5. */
    cr_expect(beats >= 4 && beats <= 7, "beats=%d", beats);
    cr_expect(last - first >= (beats - 1) * 95, "beats=%d span=%lld", beats,
              (long long)(last - first));
}

Test(notify, no_watchdog_without_watchdog_usec_or_for_another_pid)
{
    char buf[64];
    ws_notify_watchdog();
    cr_expect_not(recv_within(buf, sizeof(buf), 100), "beat without WATCHDOG_USEC");
    cr_expect_eq(ws_notify_watchdog_period_us(), 0);
    setenv("WATCHDOG_USEC", "200000", 1);
    setenv("WATCHDOG_PID", "1", 1); /* the watchdog is someone else's */
    ws_notify_reset();
    ws_notify_watchdog();
    cr_expect_not(recv_within(buf, sizeof(buf), 100), "beat for another pid");
}

Test(notify, nothing_without_notify_socket)
{
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "200000", 1);
    ws_notify_reset();
    char buf[64];
    ws_notify_ready();
    ws_notify_watchdog();
    ws_notify_loop_hook(NULL);
    ws_notify_stopping();
    ws_notify_status("x");
    cr_expect_eq(ws_notify_watchdog_period_us(), 0);
    cr_expect_not(recv_within(buf, sizeof(buf), 100));
}

/* NOTIFY_SOCKET=@name is a socket in the abstract namespace (systemd uses
 * one for user services and containers); WATCHDOG_PID naming us beats. */
Test(notify, abstract_socket_and_our_watchdog_pid)
{
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(s >= 0);
    char name[64];
    int len = snprintf(name, sizeof(name), "@ws-notify-test-%ld", (long)getpid());
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, name, (size_t)len);
    a.sun_path[0] = '\0';
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)len);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, alen), 0);
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("NOTIFY_SOCKET", name, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    ws_notify_reset();
    close(sock);
    sock = s; /* recv_within reads it; fake_manager_down closes it */
    char buf[64];
    ws_notify_stopping();
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    cr_expect_str_eq(buf, "STOPPING=1");
    cr_expect_eq(ws_notify_watchdog_period_us(), 100000);
    ws_notify_watchdog();
    cr_assert(recv_within(buf, sizeof(buf), 2000));
    cr_expect_str_eq(buf, "WATCHDOG=1");
}
