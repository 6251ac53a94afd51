/*
 * The shared harness of the integration tests: a temp dir per test, reserved
 * loopback ports, a real mosquitto broker in that dir, child processes with
 * their output in a log file, and a poll-with-deadline helper. Tests never
 * sleep to let something happen; they poll a condition with
 * harness_wait_until(). Every child is started with PR_SET_PDEATHSIG, so a
 * test that crashes leaves no process behind.
 *
 * Functions return 0 on success and -1 on failure (with a line on stderr
 * saying why), unless they say otherwise.
 */
#ifndef WS_HARNESS_H
#define WS_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

/* ---- temp dirs ---------------------------------------------------------- */

/* Create a fresh directory $TMPDIR/ws-<tag>-XXXXXX (TMPDIR defaults to
 * /tmp). Returns a malloc'ed absolute path, or NULL. */
char *harness_tmpdir_new(const char *tag);

/* Remove path recursively (does not follow symlinks) and free it. path may
 * be NULL. */
void harness_tmpdir_free(char *path);

/* Remove a file or directory tree; 0 also when it does not exist. */
int harness_rmtree(const char *path);

/* ---- ports and polling -------------------------------------------------- */

/* A TCP port on 127.0.0.1 reserved for this process until it exits, for a
 * server that is told its port in advance (a broker, or a service that must
 * come back on the same port after a restart). The port is:
 *   - never handed out twice by this process;
 *   - outside the kernel's ephemeral range (ip_local_port_range), so no
 *     outgoing connection can be given it;
 *   - locked against every other test process on the machine: an flock
 *     held on $WEBSHOP_PORT_DIR/PORT.lock (default /tmp/webshop-ports),
 *     the protocol tests/e2e/shop.py and tools/webshop follow too; a lock
 *     dies with its process, the file is removed at exit;
 *   - free to bind (SO_REUSEADDR, as servers bind) when handed out.
 * A server that need not keep its port should listen on port 0 instead and
 * report what it got (services log http_listening / rpc_listening).
 * Returns the port, or -1 (with a line on stderr) when none is left. */
int harness_port_reserve(void);

/* Kept for older callers: the same as harness_port_reserve(). */
int harness_free_port(void);

/* The bounds [*lo, *hi] of the kernel's ephemeral port range, which
 * harness_port_reserve() never hands out. */
void harness_ephemeral_range(int *lo /* OUT */, int *hi /* OUT */);

/* True if a TCP connect to 127.0.0.1:port succeeds right now. */
bool harness_port_open(int port);

/* Call fn(ctx) every few milliseconds until it returns true or timeout_ms
 * passes. Returns the last result of fn. fn runs on the calling thread. */
bool harness_wait_until(bool (*fn)(void *ctx), void *ctx, int timeout_ms);

/* Milliseconds of a monotonic clock. */
long long harness_now_ms(void);

/* ---- child processes ---------------------------------------------------- */

typedef struct harness_proc {
    pid_t pid;      /* 0 when not running */
    int status;     /* wait status once reaped */
    char log[4096]; /* stdout and stderr of the child (appended) */
} harness_proc;

/* Start argv[0] (searched in PATH) with argv, stdin from /dev/null, stdout
 * and stderr appended to log_path. p->pid is set on success. */
int harness_proc_spawn(harness_proc *p, char *const argv[], const char *log_path);

/* True while the child has not exited (reaps it if it has). */
bool harness_proc_alive(harness_proc *p);

/* Send sig (0: send nothing, just wait), wait up to timeout_ms for the
 * child to exit, then SIGKILL it if it is still there, and reap it. 0 when the child is
 * gone (or was never started). p->status holds its wait status. */
int harness_proc_stop(harness_proc *p, int sig, int timeout_ms);

/* ---- mosquitto ---------------------------------------------------------- */

typedef struct harness_broker {
    char dir[4096];  /* its own dir: config, persistence file, log */
    char conf[4096]; /* dir/mosquitto.conf */
    int port;        /* 127.0.0.1:port, kept across restarts */
    harness_proc proc;
} harness_broker;

/* Write dir/mosquitto.conf for a broker on 127.0.0.1:<a port from
 * harness_port_reserve()> (anonymous access, persistence in dir, large
 * queues, 1000 in flight, set_tcp_nodelay true), append extra_conf (may be
 * NULL; whole lines), start `mosquitto -c conf` (WS_MOSQUITTO overrides the
 * binary), and wait until it logs that it runs and the port accepts
 * connections. dir must exist. Log: dir/mosquitto.log. */
int harness_broker_start(harness_broker *b, const char *dir, const char *extra_conf);

/* Stop the broker with sig (SIGTERM saves its persistence file first;
 * SIGKILL does not), wait for it and reap it. */
int harness_broker_stop(harness_broker *b, int sig);

/* Start it again with the same config on the same port and wait until it
 * runs and accepts connections (retries while the port is still held). */
int harness_broker_restart(harness_broker *b);

#endif
