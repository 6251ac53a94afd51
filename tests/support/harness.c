/*
 * The integration-test harness: temp dirs, reserved ports, child processes and a
 * real mosquitto broker (see harness.h). Kept small and free of any
 * webshop code so every test can link it.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_POLL_MS         5
#define HARNESS_BROKER_START_MS 10000

long long harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void harness_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool harness_wait_until(bool (*fn)(void *ctx), void *ctx, int timeout_ms)
{
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        if (fn(ctx)) {
            return true;
        }
        if (harness_now_ms() >= deadline) {
            return fn(ctx);
        }
        harness_sleep_ms(HARNESS_POLL_MS);
    }
}

/* ---- temp dirs ---------------------------------------------------------- */

char *harness_tmpdir_new(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    char *path = NULL;
    if (asprintf(&path, "%s/ws-%s-XXXXXX", base, tag != NULL ? tag : "test") < 0) {
        return NULL;
    }
    if (mkdtemp(path) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", path, strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

static int harness_rmtree_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT) {
        fprintf(stderr, "harness: remove %s: %s\n", path, strerror(errno));
    }
    return 0;
}

int harness_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : -1;
    }
    nftw(path, harness_rmtree_entry, 16, FTW_DEPTH | FTW_PHYS);
    return lstat(path, &st) == 0 ? -1 : 0;
}

void harness_tmpdir_free(char *path)
{
    if (path == NULL) {
        return;
    }
    harness_rmtree(path);
    free(path);
}

/* ---- ports -------------------------------------------------------------- */

/* Reserved ports come from [HARNESS_PORT_FLOOR, 65535] minus the ephemeral
 * range, walked from a random start so concurrent runs rarely meet. */
#define HARNESS_PORT_FLOOR   20000
#define HARNESS_PORT_MAX_OWN 512
#define HARNESS_PORT_DIR     "/tmp/webshop-ports"

/* What this process holds; under harness_port_mu. */
typedef struct harness_port_lock {
    int port;
    int fd; /* the flock'ed lock file */
} harness_port_lock;

static pthread_mutex_t harness_port_mu = PTHREAD_MUTEX_INITIALIZER;
static harness_port_lock harness_port_own[HARNESS_PORT_MAX_OWN];
static int harness_port_n_own;
static unsigned char harness_port_given[65536 / 8]; /* never handed out twice */
static long harness_port_cursor = -1;               /* index into the pool */
static pid_t harness_port_owner;                    /* the process that locked */

void harness_ephemeral_range(int *lo, int *hi)
{
    *lo = 32768;
    *hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    if (f != NULL) {
        int a, b;
        if (fscanf(f, "%d %d", &a, &b) == 2 && a > 0 && a <= b && b <= 65535) {
            *lo = a;
            *hi = b;
        }
        fclose(f);
    }
}

static const char *harness_port_dir(void)
{
    const char *d = getenv("WEBSHOP_PORT_DIR");
    return d != NULL && d[0] != '\0' ? d : HARNESS_PORT_DIR;
}

/* True when a server could bind 127.0.0.1:port right now. */
static bool harness_port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Lock DIR/PORT.lock without waiting. Returns the fd holding the lock, or
 * -1 when another process holds it. The lock file is removed by its holder
 * while locked, so a lock taken on a file that is no longer the one at the
 * path (fstat and stat disagree) is worthless: given up. */
static int harness_port_lock_take(int port)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%d.lock", harness_port_dir(), port);
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    struct stat held, named;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fstat(fd, &held) != 0 ||
        stat(path, &named) != 0 || held.st_ino != named.st_ino ||
        held.st_dev != named.st_dev) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Remove the lock file while still holding the lock, then drop it. */
static void harness_port_lock_drop(int port, int fd)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%d.lock", harness_port_dir(), port);
    unlink(path);
    close(fd);
}

static void harness_port_release_all(void)
{
    pthread_mutex_lock(&harness_port_mu);
    if (harness_port_owner == getpid()) { /* not in a forked child */
        for (int i = 0; i < harness_port_n_own; i++) {
            harness_port_lock_drop(harness_port_own[i].port, harness_port_own[i].fd);
        }
        harness_port_n_own = 0;
    }
    pthread_mutex_unlock(&harness_port_mu);
}

/* The pool: [FLOOR, 65535] minus [lo, hi]; port of index i. */
static int harness_port_of(long i, int lo, int hi)
{
    int below = lo > HARNESS_PORT_FLOOR ? lo - HARNESS_PORT_FLOOR : 0;
    if (i < below) {
        return HARNESS_PORT_FLOOR + (int)i;
    }
    return (hi >= HARNESS_PORT_FLOOR ? hi + 1 : HARNESS_PORT_FLOOR) + (int)(i - below);
}

static long harness_port_pool_size(int lo, int hi)
{
    long below = lo > HARNESS_PORT_FLOOR ? lo - HARNESS_PORT_FLOOR : 0;
    long above = 65535 - (hi >= HARNESS_PORT_FLOOR ? hi : HARNESS_PORT_FLOOR - 1);
    return below + (above > 0 ? above : 0);
}

int harness_port_reserve(void)
{
    int lo, hi;
    harness_ephemeral_range(&lo, &hi);
    long n = harness_port_pool_size(lo, hi);
    pthread_mutex_lock(&harness_port_mu);
    if (harness_port_cursor >= 0 && harness_port_owner != getpid()) {
        /* A forked child: the locks it inherited are its parent's. */
        harness_port_n_own = 0;
        harness_port_owner = getpid();
    }
    if (harness_port_cursor < 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long seed =
            (unsigned long)getpid() * 2654435761ul ^ (unsigned long)ts.tv_nsec;
        harness_port_cursor = n > 0 ? (long)(seed % (unsigned long)n) : 0;
        harness_port_owner = getpid();
        mkdir(harness_port_dir(), 01777);
        chmod(harness_port_dir(), 01777); /* other users' runs share it */
        atexit(harness_port_release_all);
    }
    int port = -1;
    for (long tries = 0; tries < n && harness_port_n_own < HARNESS_PORT_MAX_OWN;
         tries++) {
        int p = harness_port_of(harness_port_cursor, lo, hi);
        harness_port_cursor = (harness_port_cursor + 1) % n;
        if (harness_port_given[p / 8] & (1u << (p % 8))) {
            continue;
        }
        int fd = harness_port_lock_take(p);
        if (fd < 0) {
            continue;
        }
        if (!harness_port_bindable(p)) {
            harness_port_lock_drop(p, fd);
            continue;
        }
        harness_port_given[p / 8] |= (unsigned char)(1u << (p % 8));
        harness_port_own[harness_port_n_own++] = (harness_port_lock){.port = p, .fd = fd};
        port = p;
        break;
    }
    pthread_mutex_unlock(&harness_port_mu);
    if (port < 0) {
        fprintf(stderr, "harness: no port left to reserve (lock dir %s)\n",
                harness_port_dir());
    }
    return port;
}

int harness_free_port(void)
{
    return harness_port_reserve();
}

bool harness_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* ---- child processes ---------------------------------------------------- */

int harness_proc_spawn(harness_proc *p, char *const argv[], const char *log_path)
{
    snprintf(p->log, sizeof(p->log), "%s", log_path);
    p->status = 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec: the parent has threads. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        setpgid(0, 0);
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0) {
            _exit(127);
        }
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

bool harness_proc_alive(harness_proc *p)
{
    if (p->pid <= 0) {
        return false;
    }
    pid_t r = waitpid(p->pid, &p->status, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->pid = 0;
        return false;
    }
    return true;
}

static bool harness_proc_gone(void *ctx)
{
    return !harness_proc_alive(ctx);
}

int harness_proc_stop(harness_proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0) {
        return 0;
    }
    kill(p->pid, sig);
    if (!harness_wait_until(harness_proc_gone, p, timeout_ms)) {
        fprintf(stderr, "harness: pid %d ignored signal %d, killing it\n", (int)p->pid,
                sig);
        kill(p->pid, SIGKILL);
        if (waitpid(p->pid, &p->status, 0) < 0 && errno != ECHILD) {
            return -1;
        }
        p->pid = 0;
    }
    return 0;
}

/* ---- mosquitto ---------------------------------------------------------- */

static const char *harness_mosquitto_bin(void)
{
    const char *bin = getenv("WS_MOSQUITTO");
    if (bin != NULL && bin[0] != '\0') {
        return bin;
    }
    /* Debian installs it in /usr/sbin, which a non-root PATH may lack. */
    if (access("/usr/sbin/mosquitto", X_OK) == 0) {
        return "/usr/sbin/mosquitto";
    }
    return "mosquitto";
}

static int harness_broker_write_conf(harness_broker *b, const char *extra_conf)
{
    FILE *f = fopen(b->conf, "w");
    if (f == NULL) {
        fprintf(stderr, "harness: %s: %s\n", b->conf, strerror(errno));
        return -1;
    }
    fprintf(f, "listener %d 127.0.0.1\n", b->port);
    fprintf(f, "allow_anonymous true\n");
    fprintf(f, "persistence true\n");
    fprintf(f, "persistence_location %s/\n", b->dir);
    fprintf(f, "persistence_file mosquitto.db\n");
    /* max_queued_messages 0 drops everything in 2.0.x (eclipse/mosquitto
     * #1956, #2879): use a large finite queue instead. */
    fprintf(f, "max_queued_messages 1000000\n");
    fprintf(f, "max_inflight_messages 1000\n");
    /* Nagle off on the broker's sockets (mosquitto's default is on): an
     * event would otherwise wait ~40 ms for a delayed ACK (DESIGN.md). */
    fprintf(f, "set_tcp_nodelay true\n");
    fprintf(f, "log_dest stderr\n"); /* unbuffered: "running" shows at once */
    fprintf(f,
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
    fprintf(f, "connection_messages true\n");
    if (geteuid() == 0) {
        /* As root mosquitto would switch to user "mosquitto", who cannot
         * write our 0700 temp dir. */
        fprintf(f, "user root\n");
    }
    if (extra_conf != NULL) {
        fprintf(f, "%s\n", extra_conf);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* True when the log at path, from byte offset on, holds text. */
static bool harness_log_has(const char *path, long offset, const char *text)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return false;
    }
    bool found = false;
    char line[1024];
    if (fseek(f, offset, SEEK_SET) == 0) {
        while (!found && fgets(line, sizeof(line), f) != NULL) {
            found = strstr(line, text) != NULL;
        }
    }
    fclose(f);
    return found;
}

static long harness_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static int harness_broker_spawn_and_wait(harness_broker *b)
{
    char logpath[4200];
    snprintf(logpath, sizeof(logpath), "%s/mosquitto.log", b->dir);
    char *argv[] = {(char *)harness_mosquitto_bin(), "-c", b->conf, NULL};
    long long deadline = harness_now_ms() + HARNESS_BROKER_START_MS;
    while (harness_now_ms() < deadline) {
        long offset = harness_file_size(logpath); /* the log is appended to */
        if (harness_proc_spawn(&b->proc, argv, logpath) != 0) {
            return -1;
        }
        /* Up when this mosquitto says it runs (its listener is bound: the
         * port answering alone could be another process) and the port
         * accepts; if it exited (port still held by a dying predecessor),
         * start it again. */
        while (harness_now_ms() < deadline) {
            if (!harness_proc_alive(&b->proc)) {
                break;
            }
            if (harness_log_has(logpath, offset, " running") &&
                harness_port_open(b->port)) {
                return 0;
            }
            harness_sleep_ms(HARNESS_POLL_MS);
        }
        if (b->proc.pid == 0) {
            harness_sleep_ms(50);
        }
    }
    fprintf(stderr, "harness: mosquitto did not come up on port %d (see %s)\n", b->port,
            logpath);
    harness_proc_stop(&b->proc, SIGKILL, 1000);
    return -1;
}

int harness_broker_start(harness_broker *b, const char *dir, const char *extra_conf)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "%s", dir);
    snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", dir);
    b->port = harness_port_reserve();
    if (b->port < 0) {
        return -1;
    }
    if (harness_broker_write_conf(b, extra_conf) != 0) {
        return -1;
    }
    return harness_broker_spawn_and_wait(b);
}

int harness_broker_stop(harness_broker *b, int sig)
{
    return harness_proc_stop(&b->proc, sig, 5000);
}

int harness_broker_restart(harness_broker *b)
{
    if (b->proc.pid > 0) {
        harness_broker_stop(b, SIGTERM);
    }
    return harness_broker_spawn_and_wait(b);
}
