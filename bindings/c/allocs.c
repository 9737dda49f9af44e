/* allocs.c - counts heap allocations per training step: after warm-up, a step of
 * cnn_model_train must allocate nothing (buffers are planned once per batch size).
 *
 *   ./allocs DATA-DIR     (data/fashion-mnist-sample)
 *
 * This program defines malloc and friends, which take precedence over the C library's for every
 * library in the process (libcnn.so and the Swift runtime in it included), counts the calls and
 * forwards them to glibc's own functions. It prints "N passed, N failed".
 *
 * With one thread a step allocates nothing. With several, each parallel region costs the two
 * 32-byte closure contexts that Swift's withoutActuallyEscaping allocates to hand the work to the
 * pool; the test checks that this figure is the same for every step (nothing grows).
 */
#define _GNU_SOURCE
#include <cnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile long allocations;

void *malloc(size_t n) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    *out = memalign(a, n);
    return *out ? 0 : 12;
}
void free(void *p) { __libc_free(p); }

typedef struct {
    long last;
    int steps, measured;
    long worst, best, total;
} counter;

/* Called after every update: the allocations since the previous call are one step's. Batch 0 of
 * every epoch is not counted (the epoch's permutation and summary live there), nor the last
 * (a partial batch), nor epoch 1. */
static int32_t on_progress(const cnn_progress *p, void *user_data) {
    counter *c = user_data;
    long now = allocations;
    if (!p->epoch_end && p->epoch >= 1 && p->batch >= 1 && p->batch < p->batches - 1) {
        long step = now - c->last;
        c->measured++;
        c->total += step;
        if (step > c->worst) c->worst = step;
        if (c->measured == 1 || step < c->best) c->best = step;
    }
    c->last = allocations;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", argv[1]);
    const char *specs[] = {
        "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)",
        "input(1,28,28) conv(8,3) batchnorm leakyrelu avgpool(2) flatten dropout(0.3) dense(32) tanh dense(10)",
        /* Blocks: residual sums, concatenation, convolutions that lower their input again in
         * backward (after a norm, after a kept ReLU output), depthwise, SE, SiLU. */
        "input(1,28,28) conv(8,3,stride=2,pad=1,bias=false) batchnorm relu "
        "residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu "
        "concat[conv(8,1) batchnorm relu6 | conv(8,3,pad=1,groups=8) batchnorm silu se(4)] "
        "conv(16,3,stride=2,pad=1) batchnorm relu globalavgpool flatten dense(10)",
        /* The same with its blocks recomputed in backward (recompute_blocks). */
        "input(1,28,28) conv(8,3,stride=2,pad=1,bias=false) batchnorm relu "
        "residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu "
        "concat[conv(8,1) batchnorm relu6 | conv(8,3,pad=1,groups=8) batchnorm silu se(4)] "
        "conv(16,3,stride=2,pad=1) batchnorm relu globalavgpool flatten dense(10)",
    };
    enum { networks = sizeof specs / sizeof specs[0] };
    int passed = 0, failed = 0;
    cnn_dataset *data = NULL;
    if (cnn_dataset_from_idx(path, NULL, &data) != CNN_OK) { fprintf(stderr, "%s\n", cnn_last_error()); return 1; }
    for (int s = 0; s < networks; s++) {
        for (int threads = 1; threads <= 2; threads++) {
            cnn_model *model = NULL;
            cnn_model_create(specs[s], 1, &model);
            counter c = {0};
            cnn_train_params params;
            cnn_train_params_default(&params);
            params.epochs = 2;
            params.momentum = 0.9f;
            params.optimizer = s == 0 ? CNN_OPTIMIZER_SGD : CNN_OPTIMIZER_ADAM;
            params.threads = threads;
            params.progress = on_progress;
            params.user_data = &c;
            params.recompute_blocks = s == networks - 1;
            cnn_status status = cnn_model_train(model, data, &params);
            int ok = status == CNN_OK && c.measured > 20 && (threads == 1 ? c.worst == 0 : c.worst == c.best);
            printf("%s network %d, %d thread(s): %d steps measured, %ld allocations in all, at most %ld in one step\n",
                   ok ? "ok  " : "FAIL", s, threads, c.measured, c.total, c.worst);
            ok ? passed++ : failed++;
            cnn_model_free(model);
        }
    }
    cnn_dataset_free(data);
    cnn_set_num_threads(1);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
