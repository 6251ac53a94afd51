/* See oom_alloc.h. */
#include "oom_alloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

/* Allocations left before the failure on this thread; -1 disarmed. */
static _Thread_local long oom_countdown = -1;
static _Thread_local bool oom_fired;

void oom_fail_nth(long n)
{
    oom_fired = false;
    oom_countdown = n;
}

bool oom_disarm(void)
{
    oom_countdown = -1;
    return oom_fired;
}

size_t oom_bytes_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Called when the armed failure happens: a place for a debugger's
 * breakpoint (gdb: break oom_fired_here). */
__attribute__((noinline)) void oom_fired_here(void);
__attribute__((noinline)) void oom_fired_here(void)
{
    __asm__ volatile("");
}

/* True when this allocation is the one to fail. */
static bool oom_now(void)
{
    if (oom_countdown < 0) {
        return false;
    }
    if (oom_countdown-- == 0) {
        oom_fired = true;
        oom_fired_here();
        errno = ENOMEM;
        return true;
    }
    return false;
}

void *malloc(size_t n)
{
    return oom_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return oom_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    /* realloc(p, 0) frees: never the one to fail. */
    if (p != NULL && n == 0) {
        return __libc_realloc(p, n);
    }
    return oom_now() ? NULL : __libc_realloc(p, n);
}
