/*
 * A throwaway PostgreSQL cluster for tests (see pg_cluster.h): initdb and
 * the postmaster are our own children, run as "postgres" when we are root,
 * and readiness is read from the postmaster.pid status line, the same
 * signal `pg_ctl -w` waits for. No libpq here: the tests reach the cluster
 * through lib/db.
 */
#include "pg_cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PG_DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define PG_INITDB_MS      120000
#define PG_START_MS       30000
#define PG_STOP_MS        30000

static void pg_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* In the child: become "postgres" when root; die with the parent. */
static void pg_child_setup(const char *log, int own_session, pid_t parent)
{
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) {
        _exit(126);
    }
    if (own_session) {
        setsid();
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL || setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
            setuid(pw->pw_uid) != 0) {
            fprintf(stderr, "pg_cluster: cannot become user postgres\n");
            _exit(126);
        }
    }
    /* After setuid, which clears it. */
    prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (getppid() != parent) {
        _exit(126);
    }
}

static pid_t pg_spawn(pg_cluster *c, const char *prog, char *const argv[],
                      const char *log, int own_session)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", c->bindir, prog);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "pg_cluster: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        pg_child_setup(log, own_session, parent);
        execv(path, argv);
        fprintf(stderr, "pg_cluster: exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Wait for pid up to ms; 0 with *status when it exited, -1 on timeout. */
static int pg_wait(pid_t pid, int ms, int *status)
{
    long long deadline = harness_now_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        if (harness_now_ms() >= deadline) {
            return -1;
        }
        pg_sleep_ms(2);
    }
}

static void pg_dump_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        fprintf(stderr, "pg_cluster: | %s", line);
    }
    fclose(f);
}

static int pg_dir_make(pg_cluster *c)
{
    const char *bindir = getenv("WS_PG_BINDIR");
    snprintf(c->bindir, sizeof(c->bindir), "%s",
             bindir && bindir[0] ? bindir : PG_DEFAULT_BINDIR);
    char *dir = harness_tmpdir_new("pg");
    if (dir == NULL) {
        return -1;
    }
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    free(dir);
    snprintf(c->data, sizeof(c->data), "%s/data", c->dir);
    snprintf(c->url, sizeof(c->url), "host=%s dbname=postgres user=webshop", c->dir);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL || chown(c->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "pg_cluster: no user postgres to run initdb as (root)\n");
            return -1;
        }
    }
    return 0;
}

int pg_cluster_init(pg_cluster *c)
{
    memset(c, 0, sizeof(*c));
    if (pg_dir_make(c) != 0) {
        return -1;
    }
    char log[400];
    snprintf(log, sizeof(log), "%s/initdb.log", c->dir);
    char *const argv[] = {"initdb", "--no-sync", "-D", c->data, "-A",         "trust",
                          "-U",     "webshop",   "-E", "UTF8",  "--locale=C", NULL};
    long long t0 = harness_now_ms();
    pid_t pid = pg_spawn(c, "initdb", argv, log, 0);
    int status = 0;
    if (pid < 0 || pg_wait(pid, PG_INITDB_MS, &status) != 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        fprintf(stderr, "pg_cluster: initdb failed in %s\n", c->dir);
        pg_dump_log(log);
        return -1;
    }
    c->init_ms = harness_now_ms() - t0;
    return 0;
}

/* The 8th line of postmaster.pid is "ready" once connections are taken. */
static int pg_ready(const pg_cluster *c)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/postmaster.pid", c->data);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    int n = 0;
    int ready = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (++n == 8) {
            ready = strncmp(line, "ready", 5) == 0;
        }
    }
    fclose(f);
    return ready;
}

int pg_cluster_start(pg_cluster *c)
{
    if (c->pid > 0) {
        return 0;
    }
    char log[400];
    snprintf(log, sizeof(log), "%s/postgres.log", c->dir);
    char sock[300];
    snprintf(sock, sizeof(sock), "unix_socket_directories=%s", c->dir);
    char *const argv[] = {"postgres",
                          "-D",
                          c->data,
                          "-c",
                          sock,
                          "-c",
                          "listen_addresses=",
                          "-c",
                          "fsync=off",
                          "-c",
                          "full_page_writes=off",
                          "-c",
                          "shared_buffers=16MB",
                          "-c",
                          "max_connections=60",
                          NULL};
    long long t0 = harness_now_ms();
    c->pid = pg_spawn(c, "postgres", argv, log, 1);
    if (c->pid < 0) {
        c->pid = 0;
        return -1;
    }
    while (harness_now_ms() - t0 < PG_START_MS) {
        int status = 0;
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            fprintf(stderr, "pg_cluster: postgres exited at start (status %d)\n", status);
            pg_dump_log(log);
            return -1;
        }
        if (pg_ready(c)) {
            c->start_ms = harness_now_ms() - t0;
            return 0;
        }
        pg_sleep_ms(2);
    }
    fprintf(stderr, "pg_cluster: postgres not ready after %d ms\n", PG_START_MS);
    pg_dump_log(log);
    pg_cluster_stop(c, 1);
    return -1;
}

int pg_cluster_stop(pg_cluster *c, int immediate)
{
    if (c == NULL || c->pid <= 0) {
        return 0;
    }
    long long t0 = harness_now_ms();
    kill(c->pid, immediate ? SIGQUIT : SIGINT);
    int status = 0;
    int rc = pg_wait(c->pid, PG_STOP_MS, &status);
    if (rc != 0) {
        fprintf(stderr, "pg_cluster: postgres did not stop; killing it\n");
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &status, 0);
    }
    c->pid = 0;
    c->stop_ms = harness_now_ms() - t0;
    return rc;
}

void pg_cluster_destroy(pg_cluster *c)
{
    if (c == NULL) {
        return;
    }
    pg_cluster_stop(c, 0);
    if (c->dir[0] != '\0') {
        harness_rmtree(c->dir);
        c->dir[0] = '\0';
    }
}

int pg_cluster_up(pg_cluster *c)
{
    if (pg_cluster_init(c) != 0 || pg_cluster_start(c) != 0) {
        pg_cluster_destroy(c);
        return -1;
    }
    return 0;
}
