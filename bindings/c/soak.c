/* soak.c - threads predicting while others train, load, save and free models, for a while.
 *
 *   ./soak DATA-DIR [SECONDS]     (data/fashion-mnist-sample; default 20 seconds)
 *
 * Before the soak, each job runs once alone and its result is kept: the probabilities of 64 test
 * images, and the bytes of a model trained for one epoch on 256 images. During the soak
 *   - 3 threads predict those images on one shared model and must get the same bits;
 *   - 1 thread trains a fresh model the same way and must save the same bytes;
 *   - 1 thread loads the saved model, predicts (same bits), saves it elsewhere and frees it;
 *   - 1 thread calls the model being trained, which must answer CNN_BUSY (or OK between runs).
 * At three quiet points (a quarter, half, the end: every job paused) the heap bytes in use must
 * not grow by a block per cycle, and the resident size by under 1 %: no leak, inside malloc or
 * outside it.
 * Ends with "N passed, N failed".
 */
#define _GNU_SOURCE
#include "testing.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define IMAGES 64
#define CLASSES 10
static const char *ARCH = "input(1,28,28) conv(16,3,pad=1) relu maxpool(2) conv(32,3,pad=1) relu maxpool(2) flatten dense(64) relu dense(10)";

static cnn_dataset *train_data, *test_data;
static cnn_model *shared_model;
static float images[IMAGES * 28 * 28], expected[IMAGES * CLASSES];
static unsigned char *trained_bytes;
static size_t trained_size;
static char dir[256];
static atomic_int stop, errors, predictions, trainings, loads, busy_seen;
static _Atomic(cnn_model *) training_model;
static atomic_int pause_requested;
static pthread_barrier_t quiet;

/* Called by each job between two units of work: when the main thread asks for a quiet point, all
 * six jobs wait here, the main thread measures, and they go on. */
static void pause_if_asked(void) {
    if (!atomic_load(&pause_requested)) return;
    pthread_barrier_wait(&quiet);  /* every job has stopped */
    pthread_barrier_wait(&quiet);  /* the main thread has measured */
}

static void fail(const char *what, const char *detail) {
    atomic_fetch_add(&errors, 1);
    printf("FAIL %s: %s\n", what, detail);
    fflush(stdout);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long resident_kb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* One epoch on the 256 training images from seed 3, saved to path. */
static cnn_status train_one(cnn_model **out, const char *path) {
    cnn_model *m = NULL;
    cnn_status s = cnn_model_create(ARCH, 3, &m);
    if (s) return s;
    atomic_store(&training_model, m);
    cnn_train_params p;
    cnn_train_params_default(&p);
    p.batch_size = 32;
    p.momentum = 0.9f;
    /* The intruder may be predicting on the model just now: training then answers CNN_BUSY and
     * leaves the model untouched, so trying again gives the same result. */
    while ((s = cnn_model_train(m, train_data, &p)) == CNN_BUSY) usleep(100);
    atomic_store(&training_model, NULL);
    if (!s) s = cnn_model_save(m, path);
    *out = m;
    return s;
}

static void *predictor(void *arg) {
    (void)arg;
    float *p = malloc(sizeof expected);
    while (!atomic_load(&stop)) {
        pause_if_asked();
        cnn_status s = cnn_model_predict(shared_model, images, IMAGES, p);
        if (s) fail("predict", cnn_last_error());
        else if (memcmp(p, expected, sizeof expected) != 0) fail("predict", "probabilities differ from the single-threaded ones");
        atomic_fetch_add(&predictions, 1);
    }
    free(p);
    return NULL;
}

static void *trainer(void *arg) {
    (void)arg;
    char path[300];
    snprintf(path, sizeof path, "%s/trained-soak.safetensors", dir);
    while (!atomic_load(&stop)) {
        pause_if_asked();
        cnn_model *m = NULL;
        cnn_status s = train_one(&m, path);
        if (s) fail("train", cnn_last_error());
        size_t n = 0;
        unsigned char *b = read_file(path, &n);
        if (!b || n != trained_size || memcmp(b, trained_bytes, n) != 0) fail("train", "the model saved differs from the one trained alone");
        free(b);
        cnn_model_free(m);
        atomic_fetch_add(&trainings, 1);
    }
    return NULL;
}

static void *loader(void *arg) {
    (void)arg;
    char from[300], to[300];
    snprintf(from, sizeof from, "%s/shared.safetensors", dir);
    snprintf(to, sizeof to, "%s/copy.safetensors", dir);
    float *p = malloc(sizeof expected);
    while (!atomic_load(&stop)) {
        pause_if_asked();
        cnn_model *m = NULL;
        if (cnn_model_load(from, &m)) { fail("load", cnn_last_error()); continue; }
        if (cnn_model_predict(m, images, IMAGES, p)) fail("predict after load", cnn_last_error());
        else if (memcmp(p, expected, sizeof expected) != 0) fail("predict after load", "probabilities differ");
        if (cnn_model_save(m, to)) fail("save", cnn_last_error());
        cnn_model_free(m);
        atomic_fetch_add(&loads, 1);
    }
    free(p);
    return NULL;
}

static void *intruder(void *arg) {
    (void)arg;
    float p[CLASSES];
    while (!atomic_load(&stop)) {
        pause_if_asked();
        cnn_model *m = atomic_load(&training_model);
        if (!m) { usleep(100); continue; }
        /* The model may be freed between the load above and this call: the registry then answers
         * CNN_INVALID_ARGUMENT instead of touching it. */
        cnn_status s = cnn_model_predict(m, images, 1, p);
        if (s == CNN_BUSY) atomic_fetch_add(&busy_seen, 1);
        else if (s != CNN_OK && s != CNN_INVALID_ARGUMENT) fail("call during training", cnn_last_error());
        usleep(200);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA-DIR [SECONDS]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 20;
    /* Buffers from 128 KiB up always come from mmap and go back to the system when freed. By
     * default glibc raises that threshold after the first such free, and large buffers then stay
     * in the arena of whichever thread freed them: the resident size moved with the jobs' timing
     * (+1.12 % and +1.39 % in two CI runs, +0.00 % in most; the heap in use flat). Pinned, the
     * resident size at a quiet point is the live memory and moves by a few KB between runs. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    char p[512];
    snprintf(dir, sizeof dir, "/tmp/cnn-soak-XXXXXX");
    if (!mkdtemp(dir)) return 2;
    cnn_dataset *all = NULL, *rest = NULL;
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", argv[1]);
    if (cnn_dataset_from_idx(p, NULL, &all) || cnn_dataset_split(all, 0.872f, 5, &train_data, &rest)) {
        printf("%s\n", cnn_last_error());
        return 2;
    }
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", argv[1]);
    if (cnn_dataset_from_idx(p, NULL, &test_data) || cnn_dataset_get(test_data, 0, IMAGES, images, NULL)) return 2;
    cnn_set_num_threads(2);

    /* Each job alone first. */
    snprintf(p, sizeof p, "%s/trained-alone.safetensors", dir);
    cnn_model *alone = NULL;
    if (train_one(&alone, p)) { printf("%s\n", cnn_last_error()); return 2; }
    trained_bytes = read_file(p, &trained_size);
    shared_model = alone;
    if (cnn_model_predict(shared_model, images, IMAGES, expected)) return 2;
    snprintf(p, sizeof p, "%s/shared.safetensors", dir);
    if (cnn_model_save(shared_model, p)) return 2;

    pthread_barrier_init(&quiet, NULL, 7);
    pthread_t threads[6];
    void *(*jobs[6])(void *) = {predictor, predictor, predictor, trainer, loader, intruder};
    for (int i = 0; i < 6; i++) pthread_create(&threads[i], NULL, jobs[i], NULL);
    /* At a quarter, at half and at the end the jobs pause together (threads kept, so the allocator
     * stays as it was): with nothing running, the heap bytes in use (mallinfo2) are exact and the
     * resident size is the live memory, and what the second half leaves beyond the first is a
     * leak. Between them the resident size is sampled 4 times a second, for the report. */
    double start = now();
    long high = 0, low = 0;
    const double quiet_at[3] = {0.25, 0.5, 1.0};
    size_t used[3];
    long resident[3];
    int cycles[3];
    for (int q = 0; q < 3; q++) {
        while (now() - start < quiet_at[q] * seconds) {
            usleep(250000);
            long rss = resident_kb();
            if (now() - start >= 0.25 * seconds) {
                if (rss > high) high = rss;
                if (low == 0 || rss < low) low = rss;
            }
        }
        atomic_store(&pause_requested, 1);
        pthread_barrier_wait(&quiet);
        struct mallinfo2 heap = mallinfo2();
        used[q] = heap.uordblks + heap.hblkhd;
        resident[q] = resident_kb();
        cycles[q] = atomic_load(&loads) + atomic_load(&trainings);
        atomic_store(&pause_requested, 0);
        pthread_barrier_wait(&quiet);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 6; i++) pthread_join(threads[i], NULL);

    printf("%.0f s: %d predictions of %d images, %d trainings, %d load-predict-save cycles, %d calls refused as busy\n",
           seconds, atomic_load(&predictions), IMAGES, atomic_load(&trainings), atomic_load(&loads), atomic_load(&busy_seen));
    double growth = resident[1] ? 100.0 * (double)(resident[2] - resident[1]) / (double)resident[1] : 100;
    printf("resident at the quiet points: %ld, %ld, %ld KB (%+.2f %% over the second half); while running %ld-%ld KB\n",
           resident[0], resident[1], resident[2], growth, low, high);
    long leaked = (long)used[2] - (long)used[1];
    int second = cycles[2] - cycles[1];
    printf("heap in use at the quiet points: %zu, %zu, %zu bytes (%+ld over the second half's %d train and load cycles)\n",
           used[0], used[1], used[2], leaked, second);
    CHECK(atomic_load(&errors) == 0, "%d wrong or failed results", atomic_load(&errors));
    CHECK(atomic_load(&predictions) > 0 && atomic_load(&trainings) > 0 && atomic_load(&loads) > 0, "a job never completed");
    CHECK(growth < 1.0, "the resident size grew by %.2f %% over the second half", growth);
    /* The smallest block malloc hands out is 32 bytes: one leaked block per cycle (or per
     * prediction, which are more) would pass 16 bytes a cycle. Below it, the bounded noise: each
     * thread's last error message, glibc's thread bookkeeping (measured: up to 2 KB). */
    CHECK(second > 0 && leaked < 16L * second, "%ld heap bytes more in use after the second half (%d cycles)", leaked, second);
    cnn_model_free(alone);
    cnn_dataset_free(all);
    cnn_dataset_free(rest);
    cnn_dataset_free(train_data);
    cnn_dataset_free(test_data);
    free(trained_bytes);
    char command[300];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    if (system(command) != 0) printf("could not remove %s\n", dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
