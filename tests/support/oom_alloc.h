/*
 * Out-of-memory injection for the runtime's OOM tests, as SQLite and libuv
 * test theirs: the test program links its own malloc/calloc/realloc (which
 * forward to glibc's __libc_*), and a thread that arms the hook sees its
 * Nth allocation from then on fail with NULL/ENOMEM. Only for builds
 * without AddressSanitizer (which owns malloc); tests/meson.build builds
 * the OOM tests only then.
 *
 * Leaks are judged by glibc's own count of bytes in use (mallinfo2): after
 * an operation failed and its caller cleaned up, the count is back where it
 * was before it started.
 */
#ifndef WS_TEST_OOM_ALLOC_H
#define WS_TEST_OOM_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* Make this thread's nth allocation from now on fail (0: the next one);
 * every later one succeeds again. */
void oom_fail_nth(long n);

/* Disarm; true when the armed failure happened since oom_fail_nth. */
bool oom_disarm(void);

/* Bytes glibc holds allocated for the program now. */
size_t oom_bytes_in_use(void);

#endif
