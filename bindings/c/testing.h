/* testing.h - what the C test programs (tests.c, hostile.c, soak.c) share: counting passed and
 * failed checks, and small file helpers. Ends of runs print "N passed, N failed". */
#ifndef CNN_TESTING_H
#define CNN_TESTING_H

#include <cnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (cond) {                                                         \
            passed++;                                                       \
        } else {                                                            \
            failed++;                                                       \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);          \
            printf(__VA_ARGS__);                                            \
            printf("\n");                                                   \
        }                                                                   \
    } while (0)

/* A call that must fail with `code` and leave a non-empty message. */
#define EXPECT_STATUS(code, call)                                                               \
    do {                                                                                        \
        cnn_status s_ = (call);                                                                 \
        CHECK(s_ == (code), "%s returned %d (%s), expected %d; last error: %s", #call, (int)s_, \
              cnn_status_string(s_), (int)(code), cnn_last_error());                            \
        if ((code) != CNN_OK) CHECK(strlen(cnn_last_error()) > 0, "%s left no message", #call); \
    } while (0)

static inline char *path(const char *dir, const char *name) {
    static char buffers[8][512];
    static int next;
    char *b = buffers[next++ % 8];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

static inline void write_file(const char *p, const void *bytes, size_t n) {
    FILE *f = fopen(p, "wb");
    if (!f) return;
    if (n) fwrite(bytes, 1, n, f);
    fclose(f);
}

static inline unsigned char *read_file(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(size > 0 ? (size_t)size : 1);
    *n = fread(b, 1, (size_t)size, f);
    fclose(f);
    return b;
}

#endif
