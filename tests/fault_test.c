/*
 * Tests of lib/fault: which points WEBSHOP_FAULT arms and with what
 * argument; a stall holds while its file exists and returns once it is
 * removed; a point not armed (or a stall without a file) costs nothing;
 * crash exits with WS_FAULT_EXIT; and the macros follow the build
 * (WS_FAULT_POINTS).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fault.h"

static void arm(const char *spec)
{
    if (spec != NULL) {
        setenv("WEBSHOP_FAULT", spec, 1);
    } else {
        unsetenv("WEBSHOP_FAULT");
    }
    ws_fault_reset();
}

Test(fault, armed_points_and_their_arguments)
{
    arm("crash_after_x,bus_loop_stall=/tmp/some file,empty=");
    cr_expect(ws_fault_armed("crash_after_x"));
    cr_expect(ws_fault_armed("bus_loop_stall"));
    cr_expect(ws_fault_armed("empty"));
    cr_expect_not(ws_fault_armed("crash_after"));
    cr_expect_not(ws_fault_armed("other"));
    cr_expect_null(ws_fault_arg("crash_after_x"));
    cr_expect_str_eq(ws_fault_arg("bus_loop_stall"), "/tmp/some file");
    cr_expect_str_eq(ws_fault_arg("empty"), "");
    cr_expect_null(ws_fault_arg("other"));
    arm(NULL);
    cr_expect_not(ws_fault_armed("crash_after_x"));
    arm("");
    cr_expect_not(ws_fault_armed(""));
}

Test(fault, macros_follow_the_build)
{
    arm("p");
#ifdef WS_FAULT_POINTS
    cr_expect(ws_fault_compiled());
    cr_expect(WS_FAULT_POINT("p"));
#else
    cr_expect_not(ws_fault_compiled());
    cr_expect_not(WS_FAULT_POINT("p"), "a point fired in a build without fault points");
#endif
    cr_expect_not(WS_FAULT_POINT("q"));
    WS_FAULT_STALL("q"); /* not armed: returns */
    arm(NULL);
}

typedef struct stall_arg {
    atomic_bool done;
} stall_arg;

static void *stall_thread(void *p)
{
    stall_arg *a = p;
    ws_fault_stall("loop_stall");
    atomic_store(&a->done, true);
    return NULL;
}

Test(fault, stall_holds_while_its_file_exists)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/ws-fault-test-%ld", (long)getpid());
    char spec[96];
    snprintf(spec, sizeof(spec), "loop_stall=%s", path);
    arm(spec);
    unlink(path);
    ws_fault_stall("loop_stall"); /* no file: returns at once */
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert(fd >= 0);
    close(fd);
    stall_arg a = {.done = false};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, stall_thread, &a), 0);
    int64_t t0 = ws_clock_mono_ms();
    while (ws_clock_mono_ms() - t0 < 200) {
        cr_assert_not(atomic_load(&a.done), "the stall returned with its file there");
        struct timespec ms = {.tv_nsec = 5000000};
        nanosleep(&ms, NULL);
    }
    unlink(path);
    t0 = ws_clock_mono_ms();
    while (!atomic_load(&a.done) && ws_clock_mono_ms() - t0 < 5000) {
        struct timespec ms = {.tv_nsec = 5000000};
        nanosleep(&ms, NULL);
    }
    cr_expect(atomic_load(&a.done), "the stall did not end when its file went");
    pthread_join(t, NULL);
    arm(NULL);
}

Test(fault, crash_exits_with_its_status)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        ws_fault_crash("test_crash");
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status));
    cr_expect_eq(WEXITSTATUS(status), WS_FAULT_EXIT);
}
