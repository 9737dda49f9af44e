/* hostile.c - a hostile client of libcnn.so: files whose headers lie about their size, absurd
 * architectures, a JPEG whose decoding would need half a gigabyte, memory limits, refused
 * allocations, and training that diverges. Each case runs in a child process under a hard
 * address-space limit (RLIMIT_AS): it must end with the expected status, in well under a second,
 * with a small peak resident size, and without being killed.
 *
 *   ./hostile DATA-DIR HOSTILE-DIR    (data/fashion-mnist-sample, Tests/data/hostile)
 *
 * Ends with "N passed, N failed" and exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include "testing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *datadir, *hostiledir;
static char tmpdir[256];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The process's address space now, in MB (/proc/self/statm counts pages). */
static long address_space_mb(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * sysconf(_SC_PAGESIZE) >> 20;
}

/* Runs `body` in a child whose address space may grow by at most `limit_mb`; its exit status is
 * the cnn_status it got (or 100 + a reason). Checks the status, that the child was not killed, its
 * time and its peak RSS beyond what the process had before. */
static void in_child(const char *name, int expected, int limit_mb, int max_rss_mb, int (*body)(void)) {
    fflush(stdout);
    struct rusage before;
    getrusage(RUSAGE_SELF, &before);
    double start = now();
    pid_t pid = fork();
    if (pid == 0) {
        rlim_t limit = (rlim_t)(address_space_mb() + limit_mb) << 20;
        struct rlimit r = {limit, limit};
        setrlimit(RLIMIT_AS, &r);
        int status = body();
        if (status != expected) printf("  %s: status %d (%s): %s\n", name, status, cnn_status_string(status), cnn_last_error());
        else printf("  %s: %s\n", name, cnn_last_error());
        fflush(stdout);
        _exit(status);
    }
    int wstatus = 0;
    struct rusage usage;
    wait4(pid, &wstatus, 0, &usage);
    double seconds = now() - start;
    long grown_mb = (usage.ru_maxrss - before.ru_maxrss) / 1024;
    CHECK(WIFEXITED(wstatus), "%s: the child was killed by signal %d", name, WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
    if (WIFEXITED(wstatus)) CHECK(WEXITSTATUS(wstatus) == expected, "%s: status %d, expected %d", name, WEXITSTATUS(wstatus), expected);
    CHECK(seconds < 1.0, "%s took %.2f s", name, seconds);
    CHECK(grown_mb <= max_rss_mb, "%s: peak RSS grew by %ld MB (at most %d)", name, grown_mb, max_rss_mb);
    printf("    %.3f s, peak RSS +%ld MB\n", seconds, grown_mb > 0 ? grown_mb : 0);
}

/* ---- the cases ---- */

static int idx_plain_16gib(void) {
    /* 16 bytes declaring 65536 images of 512x512 (16 GiB), labels beside. */
    unsigned char images[16] = {0, 0, 8, 3, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0};
    unsigned char labels[8] = {0, 0, 8, 1, 0, 1, 0, 0};
    write_file(path(tmpdir, "lie-images-idx3-ubyte"), images, sizeof images);
    write_file(path(tmpdir, "lie-labels-idx1-ubyte"), labels, sizeof labels);
    cnn_dataset *d = NULL;
    return cnn_dataset_from_idx(path(tmpdir, "lie-images-idx3-ubyte"), path(tmpdir, "lie-labels-idx1-ubyte"), &d);
}

static int idx_gzip_4gib(void) {
    cnn_dataset *d = NULL;
    return cnn_dataset_from_idx(path(hostiledir, "declares-4gib-images-idx3-ubyte.gz"),
                                path(hostiledir, "declares-4gib-labels-idx1-ubyte.gz"), &d);
}

static int idx_labels_lie(void) {
    unsigned char labels[8] = {0, 0, 8, 1, 3, 255, 255, 255};  /* 67 million labels, none there */
    write_file(path(tmpdir, "lie2-labels-idx1-ubyte"), labels, sizeof labels);
    cnn_dataset *d = NULL;
    return cnn_dataset_from_idx(path(datadir, "t10k-images-idx3-ubyte.gz"), path(tmpdir, "lie2-labels-idx1-ubyte"), &d);
}

static int architecture_too_large(void) {
    cnn_model *m = NULL;
    return cnn_model_create("input(1,128,128) flatten dense(16383) dense(16384)", 1, &m);
}

static int model_file_with_huge_architecture(void) {
    cnn_model *m = NULL;
    return cnn_model_load(path(hostiledir, "huge-architecture.safetensors"), &m);
}

static int model_file_without_its_weights(void) {
    /* A valid architecture of 268 million parameters (1 GiB of weights) in a 200-byte file. */
    const char *json = "{\"__metadata__\":{\"format\":\"swiftcnn\",\"format_version\":\"1\","
                       "\"architecture\":\"input(1,128,128) flatten dense(16000)\"}}";
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    unsigned char file[512] = {0};
    for (int i = 0; i < 8; i++) file[i] = (unsigned char)(padded >> (8 * i));
    memcpy(file + 8, json, n);
    memset(file + 8 + n, ' ', padded - n);
    write_file(path(tmpdir, "no-weights.safetensors"), file, 8 + padded);
    cnn_model *m = NULL;
    return cnn_model_load(path(tmpdir, "no-weights.safetensors"), &m);
}

static int jpeg_needs_half_a_gigabyte(void) {
    cnn_model *m = NULL;
    if (cnn_model_create("input(3,32,32) flatten dense(2)", 1, &m)) return 100;
    float p[2];
    return cnn_model_predict_jpeg_file(m, path(hostiledir, "cmyk-progressive-8000x8000.jpg"), NULL, p);
}

static int jpeg_decoder_limit_from_options(void) {
    /* A real 60x40 JPEG decodes under the default options, not under a 64 KiB decoding budget
     * when its output is asked at full size. */
    cnn_model *m = NULL;
    if (cnn_model_create("input(3,2000,2000) globalavgpool flatten dense(2)", 1, &m)) return 100;
    cnn_folder_options o;
    cnn_folder_options_default(&o);
    o.max_bytes = 1 << 16;
    float p[2];
    return cnn_model_predict_jpeg_file(m, path(hostiledir, "cmyk-progressive-8000x8000.jpg"), &o, p);
}

static int memory_limit_refuses_a_model(void) {
    if (cnn_set_memory_limit(64 << 20)) return 100;
    if (cnn_get_memory_limit() != 64 << 20) return 101;
    cnn_model *m = NULL;  /* 12.6 million weights and their gradients: 100 MB */
    return cnn_model_create("input(1,28,28) flatten dense(16000)", 1, &m);
}

static int memory_limit_refuses_a_batch(void) {
    cnn_dataset *train = NULL;
    cnn_model *m = NULL;
    if (cnn_dataset_from_idx(path(datadir, "train-images-idx3-ubyte.gz"), NULL, &train)) return 100;
    if (cnn_model_create("input(1,28,28) conv(64,3,pad=1) relu flatten dense(10)", 1, &m)) return 101;
    if (cnn_set_memory_limit(48 << 20)) return 102;
    cnn_train_params p;
    cnn_train_params_default(&p);
    p.batch_size = 256;   /* about 400 KB of working memory per image */
    return cnn_model_train(m, train, &p);
}

static int system_refuses_parameters(void) {
    /* Within the library's limit (raised to 64 GiB) but not the system's (the child's 1 GiB
     * address space): the failed allocation comes back as a status, not an abort. */
    if (cnn_set_memory_limit((int64_t)64 << 30)) return 100;
    cnn_model *m = NULL;
    return cnn_model_create("input(1,128,128) flatten dense(16000)", 1, &m);
}

static int system_refuses_a_dataset(void) {
    /* The caller's 300 MB of images fit the child's address space, the library's copy does not. */
    if (cnn_set_memory_limit((int64_t)64 << 30)) return 100;
    int n = 100000;
    float *images = calloc((size_t)n * 28 * 28, sizeof(float));
    int32_t *labels = calloc((size_t)n, sizeof(int32_t));
    if (!images || !labels) return 101;
    cnn_dataset *d = NULL;
    return cnn_dataset_from_float(images, labels, n, 1, 28, 28, 10, &d);
}

/* ---- divergence ---- */

static int all_finite(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void divergence(const char *arch, float lr, float momentum) {
    cnn_dataset *train = NULL;
    cnn_model *m = NULL;
    CHECK(cnn_dataset_from_idx(path(datadir, "train-images-idx3-ubyte.gz"), NULL, &train) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_model_create(arch, 1, &m) == CNN_OK, "%s", cnn_last_error());
    cnn_dataset *first = NULL, *rest = NULL;
    CHECK(cnn_dataset_split(train, 0.968f, 1, &first, &rest) == CNN_OK, "%s", cnn_last_error());   /* 64 images */
    int32_t n = 0;
    cnn_dataset_shape(first, &n, NULL, NULL, NULL, NULL);
    CHECK(n == 64, "the split kept %d images", n);
    cnn_train_params p;
    cnn_train_params_default(&p);
    p.learning_rate = lr;
    p.momentum = momentum;
    p.epochs = 3;
    cnn_status s = cnn_model_train(m, first, &p);
    CHECK(s == CNN_OK || s == CNN_DIVERGED, "lr %g: status %d: %s", lr, s, cnn_last_error());
    static float images[64 * 28 * 28], probabilities[64 * 10];
    cnn_dataset_get(first, 0, 64, images, NULL);
    CHECK(cnn_model_predict(m, images, 64, probabilities) == CNN_OK, "%s", cnn_last_error());
    CHECK(all_finite(probabilities, 64 * 10), "lr %g, momentum %g: training returned %s and the model predicts NaN", lr, momentum, cnn_status_string(s));
    cnn_evaluation e;
    CHECK(cnn_model_evaluate(m, first, &e, NULL) == CNN_OK && isfinite(e.loss), "lr %g: loss %g", lr, e.loss);
    printf("  lr %g momentum %g: %s; loss after it %g%s%s\n", lr, momentum, cnn_status_string(s), e.loss,
           s ? ": " : "", s ? cnn_last_error() : "");
    /* What was kept saves and loads. */
    CHECK(cnn_model_save(m, path(tmpdir, "kept.safetensors")) == CNN_OK, "%s", cnn_last_error());
    cnn_model *back = NULL;
    CHECK(cnn_model_load(path(tmpdir, "kept.safetensors"), &back) == CNN_OK, "%s", cnn_last_error());
    cnn_model_free(back);
    cnn_model_free(m);
    cnn_dataset_free(first);
    cnn_dataset_free(rest);
    cnn_dataset_free(train);
}

/* A model file whose weights hold NaN is refused by name, unless asked for. */
static void non_finite_model_file(void) {
    cnn_model *m = NULL;
    CHECK(cnn_model_create("input(1,2,2) flatten dense(2)", 1, &m) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_model_save(m, path(tmpdir, "nan.safetensors")) == CNN_OK, "%s", cnn_last_error());
    cnn_model_free(m);
    FILE *f = fopen(path(tmpdir, "nan.safetensors"), "r+b");
    unsigned char len[8];
    CHECK(f && fread(len, 1, 8, f) == 8, "cannot reopen");
    long header = 0;
    for (int i = 0; i < 8; i++) header |= (long)len[i] << (8 * i);
    float nan = NAN;
    fseek(f, 8 + header, SEEK_SET);    /* the first tensor, 0.weight, starts the data */
    fwrite(&nan, 4, 1, f);
    fclose(f);
    m = NULL;
    CHECK(cnn_model_load(path(tmpdir, "nan.safetensors"), &m) == CNN_BAD_FORMAT, "loaded a NaN weight");
    CHECK(strstr(cnn_last_error(), "'1.weight'") != NULL, "message: %s", cnn_last_error());
    CHECK(cnn_model_load_flags(path(tmpdir, "nan.safetensors"), 2, &m) == CNN_INVALID_ARGUMENT, "unknown flags");
    CHECK(cnn_model_load_flags(path(tmpdir, "nan.safetensors"), CNN_LOAD_ALLOW_NON_FINITE, &m) == CNN_OK, "%s", cnn_last_error());
    cnn_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA-DIR HOSTILE-DIR\n", argv[0]);
        return 2;
    }
    datadir = argv[1];
    hostiledir = argv[2];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cnn-hostile-XXXXXX");
    if (!mkdtemp(tmpdir)) return 2;

    printf("hostile files and architectures, each in a child whose address space may grow by 1 GiB:\n");
    static const struct {
        const char *name;
        int expected, limit_mb, max_rss_mb;
        int (*body)(void);
    } cases[] = {
        {"IDX of 16 bytes declaring 16 GiB", CNN_BAD_FORMAT, 1024, 16, idx_plain_16gib},
        {"gzip IDX of 32 bytes declaring 4 GiB", CNN_BAD_FORMAT, 1024, 16, idx_gzip_4gib},
        {"IDX labels declaring 67 million", CNN_BAD_FORMAT, 1024, 16, idx_labels_lie},
        {"architecture of 537 million parameters", CNN_INVALID_ARGUMENT, 1024, 16, architecture_too_large},
        {"144-byte model file of that architecture", CNN_BAD_FORMAT, 1024, 16, model_file_with_huge_architecture},
        {"200-byte model file of 268 million parameters", CNN_BAD_FORMAT, 1024, 16, model_file_without_its_weights},
        {"172-byte progressive CMYK JPEG of 8000x8000", CNN_OUT_OF_MEMORY, 1024, 16, jpeg_needs_half_a_gigabyte},
        {"the same under a 64 KiB decoding budget", CNN_OUT_OF_MEMORY, 1024, 16, jpeg_decoder_limit_from_options},
        {"a 100 MB model under a 64 MiB memory limit", CNN_OUT_OF_MEMORY, 1024, 16, memory_limit_refuses_a_model},
        {"a batch of 256 under a 48 MiB memory limit", CNN_OUT_OF_MEMORY, 1024, 32, memory_limit_refuses_a_batch},
        {"2 GiB of parameters the system refuses", CNN_OUT_OF_MEMORY, 1024, 16, system_refuses_parameters},
        {"a float dataset the system refuses", CNN_OUT_OF_MEMORY, 450, 320, system_refuses_a_dataset},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        in_child(cases[i].name, cases[i].expected, cases[i].limit_mb, cases[i].max_rss_mb, cases[i].body);

    printf("divergence (64 images, batch 64, 3 epochs):\n");
    const char *dense = "input(1,28,28) flatten dense(10)";
    const char *bn = "input(1,28,28) conv(8,3) batchnorm relu maxpool(2) flatten dense(10)";
    float rates[][2] = {{1e6f, 0}, {1e30f, 0}, {1e38f, 0}, {100, 0.9f}, {1e6f, 0.9f}};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        divergence(dense, rates[i][0], rates[i][1]);
        divergence(bn, rates[i][0], rates[i][1]);
    }
    non_finite_model_file();

    char command[300];
    snprintf(command, sizeof command, "rm -rf %s", tmpdir);
    if (system(command) != 0) printf("could not remove %s\n", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
