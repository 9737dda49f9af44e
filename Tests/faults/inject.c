/* inject.c - an LD_PRELOAD library that makes one call fail, for the write-fault tests.
 *
 *   CNN_FAULT=write:3   the 3rd write() fails with ENOSPC (disk full)
 *   CNN_FAULT=fsync:1   the 1st fsync() fails with EIO
 *   CNN_FAULT=rename:1  the 1st rename() fails with EXDEV
 *   CNN_FAULT=close:2   the 2nd close() fails with EIO (after closing)
 *   CNN_FAULT=open:1    the 1st open()/mkstemp() of a file for writing fails with EACCES
 *
 * Every other call goes to libc. Prints "inject: <function> <n> failed" on stderr when it fires. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fire(const char *function, int error) {
    static __thread int busy;
    const char *spec = getenv("CNN_FAULT");
    if (!spec || busy) return 0;
    size_t n = strlen(function);
    if (strncmp(spec, function, n) != 0 || spec[n] != ':') return 0;
    static int counts[8];
    static const char *names[8] = {"write", "fsync", "rename", "close", "open"};
    int slot = 0;
    while (slot < 5 && strcmp(names[slot], function) != 0) slot++;
    if (__atomic_add_fetch(&counts[slot], 1, __ATOMIC_SEQ_CST) != atoi(spec + n + 1)) return 0;
    busy = 1;
    fprintf(stderr, "inject: %s %d failed\n", function, atoi(spec + n + 1));
    busy = 0;
    errno = error;
    return 1;
}

#define REAL(name) \
    static __typeof__(&name) real_##name; \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buffer, size_t count) {
    REAL(write);
    if (fd > 2 && fire("write", ENOSPC)) return -1;
    return real_write(fd, buffer, count);
}

int fsync(int fd) {
    REAL(fsync);
    if (fire("fsync", EIO)) return -1;
    return real_fsync(fd);
}

int rename(const char *from, const char *to) {
    REAL(rename);
    if (fire("rename", EXDEV)) return -1;
    return real_rename(from, to);
}

int close(int fd) {
    REAL(close);
    int r = real_close(fd);
    if (fd > 2 && fire("close", EIO)) return -1;
    return r;
}

int mkstemp(char *template) {
    REAL(mkstemp);
    if (fire("open", EACCES)) return -1;
    return real_mkstemp(template);
}

int mkstemp64(char *template) {
    REAL(mkstemp64);
    if (fire("open", EACCES)) return -1;
    return real_mkstemp64(template);
}
