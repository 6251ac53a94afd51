/*
 * Fault points; see fault.h. The environment is parsed once into a fixed
 * table of (name, arg) pairs; lookups are a linear scan of at most
 * FAULT_MAX entries, which only test builds ever do.
 */
#include "fault.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define FAULT_MAX      16
#define FAULT_TEXT_MAX 1024
#define FAULT_POLL_MS  10

typedef struct fault_point {
    const char *name; /* into fault_text */
    const char *arg;  /* into fault_text, NULL = none */
} fault_point;

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static char fault_text[FAULT_TEXT_MAX];      /* a copy of WEBSHOP_FAULT, cut up */
static fault_point fault_points[FAULT_MAX];  /* written once under fault_once */
static size_t fault_n;

static void fault_parse(void)
{
    const char *env = getenv("WEBSHOP_FAULT");
    fault_n = 0;
    if (env == NULL || env[0] == '\0') {
        return;
    }
    strncpy(fault_text, env, sizeof(fault_text) - 1);
    fault_text[sizeof(fault_text) - 1] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(fault_text, ",", &save); tok != NULL && fault_n < FAULT_MAX;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq != NULL) {
            *eq = '\0';
        }
        fault_points[fault_n].name = tok;
        fault_points[fault_n].arg = eq != NULL ? eq + 1 : NULL;
        ws_log_warn("fault_point_armed", "name=%s arg=%s compiled=%d", tok,
                    eq != NULL ? eq + 1 : "-", ws_fault_compiled());
        fault_n++;
    }
}

static const fault_point *fault_find(const char *name)
{
    pthread_once(&fault_once, fault_parse);
    for (size_t i = 0; i < fault_n; i++) {
        if (strcmp(fault_points[i].name, name) == 0) {
            return &fault_points[i];
        }
    }
    return NULL;
}

bool ws_fault_compiled(void)
{
#ifdef WS_FAULT_POINTS
    return true;
#else
    return false;
#endif
}

bool ws_fault_armed(const char *name)
{
    return name != NULL && fault_find(name) != NULL;
}

const char *ws_fault_arg(const char *name)
{
    const fault_point *p = name != NULL ? fault_find(name) : NULL;
    return p != NULL ? p->arg : NULL;
}

void ws_fault_crash(const char *name)
{
    ws_log_warn("fault_point", "name=%s action=exit exit=%d", name, WS_FAULT_EXIT);
    _exit(WS_FAULT_EXIT);
}

void ws_fault_stall(const char *name)
{
    const char *path = ws_fault_arg(name);
    if (path == NULL || access(path, F_OK) != 0) {
        return;
    }
    ws_log_warn("fault_point_stalled", "name=%s file=%s", name, path);
    struct timespec poll = {.tv_sec = 0, .tv_nsec = FAULT_POLL_MS * 1000000L};
    while (access(path, F_OK) == 0) {
        nanosleep(&poll, NULL);
    }
    ws_log_warn("fault_point_resumed", "name=%s", name);
}

void ws_fault_reset(void)
{
    fault_once = (pthread_once_t)PTHREAD_ONCE_INIT;
    fault_n = 0;
}
