/* tests.c - the C test suite of libcnn.so: every function of cnn.h, with every error path.
 *
 *   ./tests DATA-DIR        DATA-DIR holds the Fashion-MNIST sample (data/fashion-mnist-sample)
 *
 * Ends with "N passed, N failed" and exits non-zero on any failure. Runs under valgrind in CI.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "testing.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];
static const char *datadir;

static const char *REF = "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)";
static const char *SMALL = "input(1,28,28) conv(4,3) relu maxpool(2) flatten dense(10)";

#include "tests_steps.inc"

static void test_version_and_status(void) {
    CHECK(cnn_version_number() == CNN_VERSION_NUMBER, "library %d, header %d", (int)cnn_version_number(), CNN_VERSION_NUMBER);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", CNN_VERSION_MAJOR, CNN_VERSION_MINOR, CNN_VERSION_PATCH);
    CHECK(strcmp(cnn_version_string(), expected) == 0, "%s", cnn_version_string());
    CHECK(strcmp(cnn_status_string(CNN_OK), "ok") == 0, "%s", cnn_status_string(CNN_OK));
    for (int s = 1; s <= CNN_INTERNAL; s++) CHECK(strlen(cnn_status_string(s)) > 0, "status %d", s);
    CHECK(strcmp(cnn_status_string(-1), "unknown status") == 0, "-1");
    CHECK(strcmp(cnn_status_string(11), "unknown status") == 0, "11");
    CHECK(strcmp(cnn_status_string(1 << 30), "unknown status") == 0, "2^30");
    CHECK(cnn_last_error() != NULL, "never NULL");
}

static void test_threads(void) {
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_set_num_threads(0));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_set_num_threads(-3));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_set_num_threads(257));
    EXPECT_STATUS(CNN_OK, cnn_set_num_threads(2));
    CHECK(cnn_get_num_threads() == 2, "%d", (int)cnn_get_num_threads());
    EXPECT_STATUS(CNN_OK, cnn_set_num_threads(1));
    CHECK(cnn_get_num_threads() == 1, "%d", (int)cnn_get_num_threads());
}

static void test_datasets(void) {
    float images[4 * 2 * 3 * 3];
    uint8_t bytes[4 * 3 * 3 * 2];
    int32_t labels[4] = {0, 1, 2, 1};
    for (int i = 0; i < 72; i++) images[i] = (float)i / 72.0f;
    for (int i = 0; i < 72; i++) bytes[i] = (uint8_t)(i * 3);
    cnn_dataset *d = NULL;

    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(NULL, labels, 4, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, NULL, 4, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 3, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 0, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, -4, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 0, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, -3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 0, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 2, &d)); /* label 2 */
    EXPECT_STATUS(CNN_OUT_OF_MEMORY, cnn_dataset_from_float(images, labels, 2147483647, 65535, 65535, 65535, 3, &d));
    EXPECT_STATUS(CNN_OUT_OF_MEMORY, cnn_dataset_from_float(images, labels, 2147483647, 1, 100, 100, 3, &d));
    images[5] = NAN;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 3, &d));
    images[5] = INFINITY;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 3, &d));
    images[5] = 5.0f / 72.0f;
    CHECK(d == NULL, "handle written on error");

    EXPECT_STATUS(CNN_OK, cnn_dataset_from_float(images, labels, 4, 2, 3, 3, 3, &d));
    int32_t n = 0, c = 0, h = 0, w = 0, k = 0;
    EXPECT_STATUS(CNN_OK, cnn_dataset_shape(d, &n, &c, &h, &w, &k));
    CHECK(n == 4 && c == 2 && h == 3 && w == 3 && k == 3, "%d %d %d %d %d", (int)n, (int)c, (int)h, (int)w, (int)k);
    EXPECT_STATUS(CNN_OK, cnn_dataset_shape(d, NULL, NULL, NULL, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_shape(NULL, &n, &c, &h, &w, &k));

    float got[2 * 18];
    int32_t got_labels[2];
    EXPECT_STATUS(CNN_OK, cnn_dataset_get(d, 2, 2, got, got_labels));
    CHECK(got[0] == images[36] && got[35] == images[71] && got_labels[0] == 2 && got_labels[1] == 1, "get");
    EXPECT_STATUS(CNN_OK, cnn_dataset_get(d, 3, 1, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_get(d, 3, 2, got, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_get(d, -1, 1, got, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_get(d, 0, 0, got, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_get(NULL, 0, 1, got, NULL));

    const char *names[3] = {"a", "b", "c"};
    const char *bad_names[3] = {"a", NULL, "c"};
    EXPECT_STATUS(CNN_OK, cnn_dataset_set_class_names(d, names, 3));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_set_class_names(d, names, 2));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_set_class_names(d, names, -1));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_set_class_names(d, NULL, 3));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_set_class_names(d, bad_names, 3));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_set_class_names(NULL, names, 3));
    cnn_dataset_free(d);
    /* A freed handle is rejected, not dereferenced; freeing it again is a no-op. */
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_shape(d, &n, NULL, NULL, NULL, NULL));
    cnn_dataset_free(d);
    cnn_dataset_free(NULL);
    /* A pointer that is no handle at all. */
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_shape((cnn_dataset *)images, &n, NULL, NULL, NULL, NULL));

    /* uint8 NHWC: pixel (y, x, channel) goes to (channel, y, x). */
    d = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_uint8(NULL, labels, 4, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_uint8(bytes, labels, 4, 2, 3, 3, 1, &d));
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_uint8(bytes, labels, 4, 2, 3, 3, 3, &d));
    EXPECT_STATUS(CNN_OK, cnn_dataset_get(d, 0, 1, got, NULL));
    CHECK(fabsf(got[0] - bytes[0] / 255.0f) < 1e-6f && fabsf(got[1] - bytes[2] / 255.0f) < 1e-6f &&
          fabsf(got[9] - bytes[1] / 255.0f) < 1e-6f, "NHWC to NCHW");
    cnn_dataset_free(d);

    /* IDX files. */
    d = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_idx(NULL, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_idx(path(datadir, "t10k-images-idx3-ubyte.gz"), NULL, NULL));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_dataset_from_idx(path(tmpdir, "missing-images-idx3-ubyte"), NULL, &d));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_dataset_from_idx(tmpdir, NULL, &d));
    write_file(path(tmpdir, "empty-images-idx3-ubyte"), "", 0);
    write_file(path(tmpdir, "empty-labels-idx1-ubyte"), "", 0);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_dataset_from_idx(path(tmpdir, "empty-images-idx3-ubyte"), NULL, &d));
    unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2};
    unsigned char good_labels[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 0};
    unsigned char wrong_labels[11] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 0, 1};
    unsigned char full[24];
    memcpy(full, header, 16);
    memset(full + 16, 7, 8);
    write_file(path(tmpdir, "trunc-images-idx3-ubyte"), full, 20);
    write_file(path(tmpdir, "trunc-labels-idx1-ubyte"), good_labels, 10);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_dataset_from_idx(path(tmpdir, "trunc-images-idx3-ubyte"), NULL, &d));
    write_file(path(tmpdir, "ok-images-idx3-ubyte"), full, 24);
    write_file(path(tmpdir, "ok-labels-idx1-ubyte"), wrong_labels, 11);
    EXPECT_STATUS(CNN_SHAPE_MISMATCH, cnn_dataset_from_idx(path(tmpdir, "ok-images-idx3-ubyte"), NULL, &d));
    write_file(path(tmpdir, "ok-labels-idx1-ubyte"), good_labels, 10);
    unsigned char random_bytes[4096];
    for (int i = 0; i < 4096; i++) random_bytes[i] = (unsigned char)(rand() & 255);
    write_file(path(tmpdir, "random-images-idx3-ubyte"), random_bytes, sizeof random_bytes);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_dataset_from_idx(path(tmpdir, "random-images-idx3-ubyte"), path(tmpdir, "ok-labels-idx1-ubyte"), &d));
    unsigned char huge[16] = {0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff};
    write_file(path(tmpdir, "huge-images-idx3-ubyte"), huge, 16);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_dataset_from_idx(path(tmpdir, "huge-images-idx3-ubyte"), path(tmpdir, "ok-labels-idx1-ubyte"), &d));
    CHECK(d == NULL, "handle written on error");
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_idx(path(tmpdir, "ok-images-idx3-ubyte"), NULL, &d));
    EXPECT_STATUS(CNN_OK, cnn_dataset_shape(d, &n, &c, &h, &w, &k));
    CHECK(n == 2 && c == 1 && h == 2 && w == 2 && k == 2, "idx shape");
    cnn_dataset_free(d);
}

static void test_models(void) {
    cnn_model *m = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_create(NULL, 1, &m));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_create(REF, 1, NULL));
    EXPECT_STATUS(CNN_PARSE_ERROR, cnn_model_create("", 1, &m));
    EXPECT_STATUS(CNN_PARSE_ERROR, cnn_model_create("input(1,28,28) convv(3,3) flatten dense(10)", 1, &m));
    CHECK(strstr(cnn_last_error(), "convv") != NULL && strstr(cnn_last_error(), "column") != NULL, "%s", cnn_last_error());
    EXPECT_STATUS(CNN_PARSE_ERROR, cnn_model_create("input(1,28,28) conv(32,3,pad=1", 1, &m));
    EXPECT_STATUS(CNN_PARSE_ERROR, cnn_model_create("\xff\xfe garbage ((((", 1, &m));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_create("input(1,28,28) dense(10)", 1, &m));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_create("input(65536,65536,65536) flatten dense(2)", 1, &m));
    CHECK(m == NULL, "handle written on error");
    EXPECT_STATUS(CNN_OK, cnn_model_create(REF, 1, &m));

    int32_t c = 0, h = 0, w = 0, k = 0;
    int64_t count = 0;
    const char *text = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_input_shape(m, &c, &h, &w));
    CHECK(c == 1 && h == 28 && w == 28, "input shape");
    EXPECT_STATUS(CNN_OK, cnn_model_input_shape(m, NULL, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_input_shape(NULL, &c, &h, &w));
    EXPECT_STATUS(CNN_OK, cnn_model_num_classes(m, &k));
    CHECK(k == 10, "classes %d", (int)k);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_num_classes(m, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_num_classes(NULL, &k));
    EXPECT_STATUS(CNN_OK, cnn_model_parameter_count(m, &count));
    CHECK(count == 421642, "parameters %lld", (long long)count);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_parameter_count(m, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_parameter_count(NULL, &count));
    EXPECT_STATUS(CNN_OK, cnn_model_architecture(m, &text));
    CHECK(text && strcmp(text, REF) == 0, "%s", text ? text : "(null)");
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_architecture(m, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_architecture(NULL, &text));
    EXPECT_STATUS(CNN_OK, cnn_model_summary(m, &text));
    CHECK(text && strstr(text, "421,642") != NULL, "%s", text ? text : "(null)");
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary(NULL, &text));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary(m, NULL));
    EXPECT_STATUS(CNN_OK, cnn_model_summary_timed(m, 2, 3, &text));
    CHECK(text && strstr(text, "421,642") != NULL && strstr(text, "batch 2, 3 predictions") != NULL, "%s",
          text ? text : "(null)");
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary_timed(m, 0, 3, &text));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary_timed(m, 2, 0, &text));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary_timed(m, 2, 3, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_summary_timed(NULL, 2, 3, &text));
    EXPECT_STATUS(CNN_OK, cnn_model_class_name(m, 9, &text));
    CHECK(text && strcmp(text, "9") == 0, "%s", text ? text : "(null)");
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_class_name(m, 10, &text));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_class_name(m, -1, &text));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_class_name(m, 0, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_class_name(NULL, 0, &text));

    /* Save and load. */
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_save(NULL, path(tmpdir, "m.safetensors")));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_save(m, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_save(m, ""));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_save(m, tmpdir));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_save(m, path(tmpdir, "no/such/dir.safetensors")));
    EXPECT_STATUS(CNN_OK, cnn_model_save(m, path(tmpdir, "m.safetensors")));
    cnn_model *l = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_load(NULL, &l));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_load(path(tmpdir, "m.safetensors"), NULL));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_load(path(tmpdir, "missing.safetensors"), &l));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_load(tmpdir, &l));
    size_t size = 0;
    unsigned char *good = read_file(path(tmpdir, "m.safetensors"), &size);
    CHECK(good && size > 1000, "saved file");
    if (good) {
        const size_t cuts[] = {0, 1, 7, 8, 9, 64, 200, 1000, 100000, size / 2, size - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            write_file(path(tmpdir, "bad.safetensors"), good, cuts[i]);
            EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_load(path(tmpdir, "bad.safetensors"), &l));
        }
        unsigned char *random_bytes = malloc(size);
        for (size_t i = 0; i < size; i++) random_bytes[i] = (unsigned char)(rand() & 255);
        write_file(path(tmpdir, "bad.safetensors"), random_bytes, size);
        EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_load(path(tmpdir, "bad.safetensors"), &l));
        /* A valid header followed by random bytes loads or fails, but never crashes. */
        memcpy(random_bytes, good, 8 + (size_t)good[0] + ((size_t)good[1] << 8));
        write_file(path(tmpdir, "bad.safetensors"), random_bytes, size);
        cnn_status s = cnn_model_load(path(tmpdir, "bad.safetensors"), &l);
        CHECK(s == CNN_OK || s == CNN_BAD_FORMAT, "status %d", (int)s);
        if (s == CNN_OK) { cnn_model_free(l); l = NULL; }
        /* Corrupt bytes inside the JSON header. */
        for (size_t at = 8; at < 8 + (size_t)good[0]; at += 37) {
            memcpy(random_bytes, good, size);
            random_bytes[at] ^= 0x55;
            write_file(path(tmpdir, "bad.safetensors"), random_bytes, size);
            s = cnn_model_load(path(tmpdir, "bad.safetensors"), &l);
            CHECK(s == CNN_OK || s == CNN_BAD_FORMAT, "status %d at byte %zu", (int)s, at);
            if (s == CNN_OK) { cnn_model_free(l); l = NULL; }
        }
        free(random_bytes);
        free(good);
    }
    CHECK(l == NULL, "handle written on error");
    EXPECT_STATUS(CNN_OK, cnn_model_load(path(tmpdir, "m.safetensors"), &l));
    EXPECT_STATUS(CNN_OK, cnn_model_parameter_count(l, &count));
    CHECK(count == 421642, "loaded parameters");
    cnn_model_free(l);
    cnn_model_free(m);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_num_classes(m, &k)); /* freed */
    cnn_model_free(m);
    cnn_model_free(NULL);
}

typedef struct {
    int calls, epoch_ends, cancel_at, busy_seen;
    cnn_model *model;
    float first_loss, last_loss, val_accuracy;
} progress_state;

static int32_t on_progress(const cnn_progress *p, void *user_data) {
    progress_state *s = user_data;
    s->calls++;
    if (s->calls == 1) s->first_loss = p->loss;
    s->last_loss = p->loss;
    if (p->epoch_end) {
        s->epoch_ends++;
        if (p->has_validation) s->val_accuracy = p->val_accuracy;
    }
    if (s->model && s->calls == 2) {
        /* The model is being trained: every other use is refused with CNN_BUSY. */
        float x[28 * 28] = {0}, y[10];
        cnn_train_params params;
        cnn_train_params_default(&params);
        s->busy_seen = cnn_model_predict(s->model, x, 1, y) == CNN_BUSY &&
                       cnn_model_save(s->model, path(tmpdir, "busy.safetensors")) == CNN_BUSY &&
                       cnn_model_train(s->model, NULL, &params) != CNN_OK;
    }
    return s->cancel_at > 0 && s->calls >= s->cancel_at;
}

static void test_training(cnn_model **trained, cnn_dataset **test_out) {
    cnn_dataset *train = NULL, *test = NULL;
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_idx(path(datadir, "train-images-idx3-ubyte.gz"), NULL, &train));
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_idx(path(datadir, "t10k-images-idx3-ubyte.gz"), NULL, &test));
    int32_t n = 0;
    cnn_dataset_shape(train, &n, NULL, NULL, NULL, NULL);
    CHECK(n == 2000, "sample size %d", (int)n);
    cnn_model *m = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_create(SMALL, 1, &m));

    cnn_train_params p;
    memset(&p, 0xAB, sizeof p);
    cnn_train_params_default(&p);
    CHECK(p.struct_size == sizeof p && p.epochs == 1 && p.batch_size == 64 && p.seed == 1 && p.progress == NULL, "defaults");
    cnn_train_params_default(NULL); /* harmless */

    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(NULL, train, &p));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, NULL, &p));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, train, NULL));
    cnn_train_params bad;
#define BAD_PARAM(field, value)                                            \
    do {                                                                   \
        bad = p;                                                           \
        bad.field = value;                                                 \
        EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, train, &bad)); \
    } while (0)
    BAD_PARAM(struct_size, 0);
    BAD_PARAM(struct_size, 8);
    BAD_PARAM(epochs, 0);
    BAD_PARAM(epochs, -1);
    BAD_PARAM(batch_size, 0);
    BAD_PARAM(optimizer, 4);
    BAD_PARAM(optimizer, -1);
    BAD_PARAM(schedule, 3);
    BAD_PARAM(loss, 2);
    BAD_PARAM(nesterov, 2);
    BAD_PARAM(learning_rate, NAN);
    BAD_PARAM(learning_rate, -0.1f);
    BAD_PARAM(momentum, 1.5f);
    BAD_PARAM(weight_decay, -1);
    BAD_PARAM(label_smoothing, 1);
    BAD_PARAM(threads, -1);
    BAD_PARAM(threads, 1000);
    BAD_PARAM(recompute_blocks, 2);
    BAD_PARAM(validation, (const cnn_dataset *)&bad);

    /* Data that does not fit the model. */
    float images[2 * 3 * 28 * 28] = {0};
    int32_t labels[2] = {0, 1};
    cnn_dataset *rgb = NULL, *many = NULL;
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_float(images, labels, 2, 3, 28, 28, 2, &rgb));
    EXPECT_STATUS(CNN_SHAPE_MISMATCH, cnn_model_train(m, rgb, &p));
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_float(images, labels, 2, 1, 28, 28, 20, &many));
    EXPECT_STATUS(CNN_SHAPE_MISMATCH, cnn_model_train(m, many, &p));
    cnn_evaluation e;
    EXPECT_STATUS(CNN_SHAPE_MISMATCH, cnn_model_evaluate(m, rgb, &e, NULL));
    cnn_dataset_free(rgb);
    cnn_dataset_free(many);

    /* Cancel from the callback, and CNN_BUSY for calls made while training. */
    progress_state s = {0};
    s.cancel_at = 3;
    s.model = m;
    p.progress = on_progress;
    p.user_data = &s;
    EXPECT_STATUS(CNN_CANCELLED, cnn_model_train(m, train, &p));
    CHECK(s.calls == 3, "callback calls %d", s.calls);
    CHECK(s.busy_seen, "calls during training were not refused with CNN_BUSY");

    /* Divergence. */
    cnn_model *wild = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_create("input(1,28,28) flatten dense(10)", 1, &wild));
    bad = p;
    bad.learning_rate = 1e38f;
    bad.progress = NULL;
    bad.epochs = 2;
    EXPECT_STATUS(CNN_DIVERGED, cnn_model_train(wild, train, &bad));
    cnn_model_free(wild);

    /* A real run: the loss goes down, validation is reported, names come from the dataset. */
    memset(&s, 0, sizeof s);
    p.epochs = 2;
    p.batch_size = 32;
    p.momentum = 0.9f;
    p.validation = test;
    p.threads = 2;
    EXPECT_STATUS(CNN_OK, cnn_model_train(m, train, &p));
    CHECK(s.epoch_ends == 2, "epoch ends %d", s.epoch_ends);
    CHECK(s.calls == 2 * (63 + 1), "calls %d", s.calls);
    CHECK(s.last_loss < s.first_loss * 0.6f, "loss %f -> %f", s.first_loss, s.last_loss);
    CHECK(s.val_accuracy > 0.6f, "validation accuracy %f", s.val_accuracy);
    const char *name = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_class_name(m, 9, &name));
    CHECK(name && strcmp(name, "Ankle boot") == 0, "%s", name ? name : "(null)");

    /* Evaluation. */
    int32_t confusion[100];
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_evaluate(m, test, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_evaluate(NULL, test, &e, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_evaluate(m, NULL, &e, NULL));
    EXPECT_STATUS(CNN_OK, cnn_model_evaluate(m, test, &e, confusion));
    int total = 0, diagonal = 0;
    for (int i = 0; i < 100; i++) total += confusion[i];
    for (int i = 0; i < 10; i++) diagonal += confusion[i * 11];
    CHECK(e.count == 500 && total == 500, "count %d, confusion total %d", (int)e.count, total);
    CHECK(fabsf(e.accuracy - diagonal / 500.0f) < 1e-6f && e.accuracy > 0.6f && e.loss > 0, "accuracy %f", e.accuracy);
    CHECK(fabsf(e.accuracy - s.val_accuracy) < 1e-6f, "evaluate %f vs validation %f", e.accuracy, s.val_accuracy);

    /* Same seed and settings, same bytes: with 1 thread as with 2. */
    cnn_model *one = NULL, *two = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_create(SMALL, 5, &one));
    EXPECT_STATUS(CNN_OK, cnn_model_create(SMALL, 5, &two));
    p.epochs = 1;
    p.progress = NULL;
    p.validation = NULL;
    p.threads = 1;
    EXPECT_STATUS(CNN_OK, cnn_model_train(one, train, &p));
    p.threads = 2;
    EXPECT_STATUS(CNN_OK, cnn_model_train(two, train, &p));
    cnn_set_num_threads(1);
    cnn_model_save(one, path(tmpdir, "t1.safetensors"));
    cnn_model_save(two, path(tmpdir, "t2.safetensors"));
    size_t n1 = 0, n2 = 0;
    unsigned char *b1 = read_file(path(tmpdir, "t1.safetensors"), &n1), *b2 = read_file(path(tmpdir, "t2.safetensors"), &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "models trained with 1 and 2 threads differ");
    free(b1);
    free(b2);
    cnn_model_free(one);
    cnn_model_free(two);
    cnn_dataset_free(train);
    *trained = m;
    *test_out = test;
}

typedef struct {
    cnn_model *model;
    const float *images;
    int n;
    float *out;
    cnn_status status;
} predict_job;

static void *predict_thread(void *arg) {
    predict_job *job = arg;
    for (int round = 0; round < 3 && job->status == CNN_OK; round++)
        job->status = cnn_model_predict(job->model, job->images, job->n, job->out);
    return NULL;
}

static void test_inference(cnn_model *m, cnn_dataset *test) {
    enum { N = 16, K = 10 };
    static float images[N * 28 * 28], probs[N * K], logits[N * K], probs8[N * K];
    static uint8_t bytes[N * 28 * 28];
    EXPECT_STATUS(CNN_OK, cnn_dataset_get(test, 0, N, images, NULL));
    for (int i = 0; i < N * 28 * 28; i++) bytes[i] = (uint8_t)lrintf(images[i] * 255.0f);

    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(NULL, images, N, probs));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, NULL, N, probs));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, images, N, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, images, 0, probs));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, images, -5, probs));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, images, 1 << 30, probs));
    float saved = images[3];
    images[3] = NAN;
    probs[0] = -7;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict(m, images, N, probs));
    CHECK(probs[0] == -7, "output written on error");
    images[3] = saved;
    EXPECT_STATUS(CNN_OK, cnn_model_predict(m, images, N, probs));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_logits(m, images, N, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_logits(NULL, images, N, logits));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_logits(m, images, N, logits));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_uint8(m, NULL, N, probs8));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_uint8(m, bytes, 0, probs8));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_uint8(m, bytes, N, probs8));
    for (int i = 0; i < N; i++) {
        float sum = 0, max = logits[i * K], z = 0;
        for (int j = 0; j < K; j++) sum += probs[i * K + j];
        for (int j = 1; j < K; j++) if (logits[i * K + j] > max) max = logits[i * K + j];
        for (int j = 0; j < K; j++) z += expf(logits[i * K + j] - max);
        CHECK(fabsf(sum - 1) < 1e-5f, "row %d sums to %f", i, sum);
        CHECK(fabsf(probs[i * K] - expf(logits[i * K] - max) / z) < 1e-5f, "softmax of logits, row %d", i);
        for (int j = 0; j < K; j++)
            CHECK(fabsf(probs8[i * K + j] - probs[i * K + j]) < 1e-4f, "uint8 and float inputs, row %d", i);
    }

    /* top-k */
    int32_t idx[N * 3];
    float vals[N * 3];
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(NULL, N, K, 3, idx, vals));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(probs, N, K, 3, NULL, vals));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(probs, N, K, 0, idx, vals));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(probs, N, K, 11, idx, vals));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(probs, 0, K, 3, idx, vals));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_top_k(probs, N, 0, 1, idx, vals));
    EXPECT_STATUS(CNN_OK, cnn_top_k(probs, N, K, 3, idx, vals));
    EXPECT_STATUS(CNN_OK, cnn_top_k(probs, N, K, 3, idx, NULL));
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < K; j++) CHECK(probs[i * K + j] <= vals[i * 3], "top-1 is the maximum, row %d", i);
        CHECK(vals[i * 3] >= vals[i * 3 + 1] && vals[i * 3 + 1] >= vals[i * 3 + 2], "order, row %d", i);
        CHECK(probs[i * K + idx[i * 3 + 1]] == vals[i * 3 + 1], "values match indices, row %d", i);
    }
    float ties[4] = {1, 3, 3, NAN};
    int32_t tie_idx[4];
    EXPECT_STATUS(CNN_OK, cnn_top_k(ties, 1, 4, 4, tie_idx, NULL));
    CHECK(tie_idx[0] == 1 && tie_idx[1] == 2 && tie_idx[2] == 0 && tie_idx[3] == 3, "ties and NaN: %d %d %d %d",
          (int)tie_idx[0], (int)tie_idx[1], (int)tie_idx[2], (int)tie_idx[3]);

    /* 8 threads predicting on one model give the single thread's results, bit for bit. */
    enum { T = 8 };
    pthread_t threads[T];
    predict_job jobs[T];
    static float outs[T][N * K];
    cnn_set_num_threads(2);
    for (int t = 0; t < T; t++) {
        jobs[t] = (predict_job){m, images, N - t, outs[t], CNN_OK};
        pthread_create(&threads[t], NULL, predict_thread, &jobs[t]);
    }
    for (int t = 0; t < T; t++) pthread_join(threads[t], NULL);
    cnn_set_num_threads(1);
    for (int t = 0; t < T; t++) {
        CHECK(jobs[t].status == CNN_OK, "thread %d: %s", t, cnn_status_string(jobs[t].status));
        CHECK(memcmp(outs[t], probs, sizeof(float) * (size_t)(N - t) * K) == 0, "thread %d differs from one thread", t);
    }
}

static void test_folders(cnn_model *m) {
    char root[400], jpg[512];
    snprintf(root, sizeof root, "%s/../fashion-mnist-jpeg/test", datadir);
    snprintf(jpg, sizeof jpg, "%s/Bag/018.jpg", root);
    cnn_folder_options o;
    memset(&o, 0x7F, sizeof o);
    cnn_folder_options_default(&o);
    CHECK(o.struct_size == sizeof o && o.fit == CNN_FIT_CROP && o.strict == 0 && o.apply_exif_orientation == 1 &&
          o.max_scans == 100 && o.max_pixels == 64000000 && o.cache_bytes > 0, "folder defaults");
    cnn_folder_options_default(NULL);
    cnn_dataset *d = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(NULL, 1, 28, 28, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 2, 28, 28, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 0, 28, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, -1, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 65536, 65536, NULL, &d));
    cnn_folder_options bad = o;
    bad.struct_size = 4;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, &bad, &d));
    bad = o; bad.fit = 3;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, &bad, &d));
    bad = o; bad.strict = 2;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, &bad, &d));
    bad = o; bad.max_scans = 0;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, &bad, &d));
    bad = o; bad.cache_bytes = -1;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(root, 1, 28, 28, &bad, &d));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_dataset_from_folder(path(tmpdir, "no-such-folder"), 1, 28, 28, NULL, &d));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_from_folder(jpg, 1, 28, 28, NULL, &d));
    CHECK(d == NULL, "handle written on error");
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_folder(root, 1, 28, 28, NULL, &d));
    int32_t n = 0, k = 0, skipped = -1;
    cnn_dataset_shape(d, &n, NULL, NULL, NULL, &k);
    CHECK(n == 500 && k == 10, "folder: %d images, %d classes", (int)n, (int)k);
    EXPECT_STATUS(CNN_OK, cnn_dataset_skipped_count(d, &skipped));
    CHECK(skipped == 0, "skipped %d", (int)skipped);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_skipped_count(d, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_skipped_count(NULL, &skipped));
    const char *file = NULL, *reason = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_skipped_file(d, 0, &file, &reason));
    cnn_evaluation e;
    /* The folders' names, sorted, are not the model's classes in its order: refused, not a number. */
    EXPECT_STATUS(CNN_SHAPE_MISMATCH, cnn_model_evaluate(m, d, &e, NULL));
    CHECK(strstr(cnn_last_error(), "Ankle boot") != NULL, "names the lists: %s", cnn_last_error());
    const char *first_file = NULL;
    EXPECT_STATUS(CNN_OK, cnn_dataset_sample_path(d, 0, &first_file));
    CHECK(first_file && strncmp(first_file, root, strlen(root)) == 0 && strstr(first_file, ".jpg"), "sample 0 is %s", first_file ? first_file : "NULL");

    /* Split. */
    cnn_dataset *a = NULL, *b = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_split(NULL, 0.2f, 1, &a, &b));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_split(d, 0, 1, &a, &b));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_split(d, 1, 1, &a, &b));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_split(d, NAN, 1, &a, &b));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_split(d, 0.2f, 1, NULL, &b));
    EXPECT_STATUS(CNN_OK, cnn_dataset_split(d, 0.2f, 1, &a, &b));
    int32_t na = 0, nb = 0;
    cnn_dataset_shape(a, &na, NULL, NULL, NULL, NULL);
    cnn_dataset_shape(b, &nb, NULL, NULL, NULL, NULL);
    CHECK(na == 400 && nb == 100, "split %d + %d", (int)na, (int)nb);
    cnn_dataset_free(a);
    cnn_dataset_free(b);
    cnn_dataset_free(d);

    /* A folder with bad files: skipped and named, or (strict) an error. */
    char dir[400], command[1600];
    snprintf(dir, sizeof dir, "%s/folder/cls", tmpdir);
    snprintf(command, sizeof command, "mkdir -p '%s' && cp '%s' '%s/good.jpg'", dir, jpg, dir);
    CHECK(system(command) == 0, "setup");
    write_file(path(dir, "bad.jpg"), "\xff\xd8\xff\xe0garbage", 12);
    write_file(path(dir, "empty.jpeg"), "", 0);
    d = NULL;
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_folder(path(tmpdir, "folder"), 1, 28, 28, NULL, &d));
    EXPECT_STATUS(CNN_OK, cnn_dataset_skipped_count(d, &skipped));
    CHECK(skipped == 2, "skipped %d", (int)skipped);
    EXPECT_STATUS(CNN_OK, cnn_dataset_skipped_file(d, 1, &file, &reason));
    CHECK(file && strstr(file, "empty.jpeg") && reason && strlen(reason) > 0, "%s: %s", file ? file : "", reason ? reason : "");
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_skipped_file(d, 2, &file, &reason));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_dataset_skipped_file(d, 0, NULL, &reason));
    cnn_dataset_free(d);
    cnn_folder_options strict = o;
    strict.strict = 1;
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_dataset_from_folder(path(tmpdir, "folder"), 1, 28, 28, &strict, &d));

    /* Prediction from JPEG bytes and files. */
    float p1[10], p2[10];
    size_t size = 0;
    unsigned char *bytes = read_file(jpg, &size);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg(NULL, bytes, size, NULL, p1));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg(m, NULL, size, NULL, p1));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg(m, bytes, 0, NULL, p1));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg(m, bytes, size, NULL, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg(m, bytes, size, &bad, p1));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_jpeg(m, bytes, size, NULL, p1));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_jpeg_file(m, jpg, &o, p2));
    CHECK(memcmp(p1, p2, sizeof p1) == 0, "bytes and file predictions differ");
    float sum = 0;
    for (int i = 0; i < 10; i++) sum += p1[i];
    CHECK(fabsf(sum - 1) < 1e-5f, "probabilities sum to %f", sum);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_predict_jpeg(m, bytes, 100, NULL, p1));          /* truncated early */
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_predict_jpeg(m, (const uint8_t *)"hello", 5, NULL, p1));
    unsigned char junk[3000];
    for (int i = 0; i < 3000; i++) junk[i] = (unsigned char)(rand() & 255);
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_predict_jpeg(m, junk, sizeof junk, NULL, p1));
    memcpy(junk, bytes, size < 200 ? size : 200);                                          /* valid header, random data */
    cnn_status st = cnn_model_predict_jpeg(m, junk, sizeof junk, NULL, p1);
    CHECK(st == CNN_OK || st == CNN_BAD_FORMAT, "status %d", (int)st);
    free(bytes);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_predict_jpeg_file(m, NULL, NULL, p1));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_predict_jpeg_file(m, path(tmpdir, "missing.jpg"), NULL, p1));
    EXPECT_STATUS(CNN_IO_ERROR, cnn_model_predict_jpeg_file(m, tmpdir, NULL, p1));
    EXPECT_STATUS(CNN_BAD_FORMAT, cnn_model_predict_jpeg_file(m, path(dir, "bad.jpg"), NULL, p1));

    /* Augmented training on the folder, and bad augmentation settings. */
    cnn_dataset *train = NULL;
    cnn_folder_options stream = o;
    stream.cache_bytes = 0; /* decoded per batch on the loader thread */
    EXPECT_STATUS(CNN_OK, cnn_dataset_from_folder(root, 1, 28, 28, &stream, &train));
    cnn_model *jm = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_create("input(1,28,28) conv(4,3) relu maxpool(2) flatten dense(10)", 3, &jm));
    cnn_train_params p;
    cnn_train_params_default(&p);
    CHECK(p.augment_flip == 0 && p.augment_translate == 0 && p.loader_threads == 1, "augmentation defaults");
    p.batch_size = 50;
    cnn_train_params badp = p;
    badp.augment_flip = 2;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(jm, train, &badp));
    badp = p; badp.augment_translate = -1;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(jm, train, &badp));
    badp = p; badp.augment_brightness = 2;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(jm, train, &badp));
    badp = p; badp.loader_threads = 0;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(jm, train, &badp));
    p.augment_flip = 1;
    p.augment_translate = 2;
    p.augment_contrast = 0.2f;
    p.loader_threads = 2;
    EXPECT_STATUS(CNN_OK, cnn_model_train(jm, train, &p));
    EXPECT_STATUS(CNN_OK, cnn_model_class_name(jm, 0, &file));
    CHECK(file && strcmp(file, "Ankle boot") == 0, "folder class name %s", file ? file : "");
    EXPECT_STATUS(CNN_OK, cnn_model_predict_jpeg_file(jm, jpg, NULL, p1));
    cnn_model_free(jm);
    cnn_dataset_free(train);
}

/* ONNX export and import (bit for bit), a new head, and training with frozen layers. */
static void test_onnx_and_fine_tuning(cnn_model *m, cnn_dataset *test) {
    enum { N = 8, K = 10 };
    static float images[N * 28 * 28], a[N * K], b[N * K];
    char path[300];
    snprintf(path, sizeof path, "%s/model.onnx", tmpdir);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_export_onnx(NULL, path));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_export_onnx(m, NULL));
    EXPECT_STATUS(CNN_OK, cnn_model_export_onnx(m, path));
    cnn_model *back = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_load(path, &back));
    EXPECT_STATUS(CNN_OK, cnn_dataset_get(test, 0, N, images, NULL));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_logits(m, images, N, a));
    if (back) {
        EXPECT_STATUS(CNN_OK, cnn_model_predict_logits(back, images, N, b));
        CHECK(memcmp(a, b, sizeof a) == 0, "the imported model predicts as the exported one");
    }
    cnn_model_free(back);

    cnn_model *tuned = NULL;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_new_head(NULL, 10, 1, &tuned));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_new_head(m, 10, 1, NULL));
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_new_head(m, 0, 1, &tuned));
    EXPECT_STATUS(CNN_OK, cnn_model_new_head(m, 10, 7, &tuned));
    if (!tuned) return;
    cnn_train_params p;
    cnn_train_params_default(&p);
    p.freeze_until = 5;   /* every layer of the trained network (SMALL): nothing would train */
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(tuned, test, &p));
    p.freeze_until = 4;   /* the dense layer trains */
    p.threads = 1;
    EXPECT_STATUS(CNN_OK, cnn_model_train(tuned, test, &p));
    EXPECT_STATUS(CNN_OK, cnn_model_predict_logits(tuned, images, N, b));
    CHECK(memcmp(a, b, sizeof a) != 0, "the new head predicts otherwise");
    cnn_model_free(tuned);
}

/* Data-parallel training's settings (Tests/mpi/run.sh trains under mpirun): wrong values are
 * refused, and a missing Open MPI is an error that names it, never a crash. */
static void test_distributed_params(cnn_dataset *test) {
    cnn_model *m = NULL;
    EXPECT_STATUS(CNN_OK, cnn_model_create(SMALL, 3, &m));
    if (!m) return;
    cnn_train_params p;
    cnn_train_params_default(&p);
    CHECK(p.distributed == 0 && p.mpi_comm == NULL, "not distributed by default");
    p.distributed = 2;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, test, &p));
    CHECK(strstr(cnn_last_error(), "params.distributed must be 0 or 1") != NULL, "message: %s", cnn_last_error());
    p.distributed = 0;
    p.mpi_comm = &p;
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, test, &p));
    CHECK(strstr(cnn_last_error(), "mpi_comm is set but params.distributed is 0") != NULL, "message: %s", cnn_last_error());
    p.mpi_comm = NULL;
    p.distributed = 1;
    setenv("CNN_MPI_LIBRARY", "/nonexistent/libmpi.so.40", 1);
    EXPECT_STATUS(CNN_INVALID_ARGUMENT, cnn_model_train(m, test, &p));
    CHECK(strstr(cnn_last_error(), "needs Open MPI, and /nonexistent/libmpi.so.40 could not be loaded") != NULL,
          "message: %s", cnn_last_error());
    unsetenv("CNN_MPI_LIBRARY");
    cnn_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA-DIR\n", argv[0]);
        return 2;
    }
    datadir = argv[1];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cnn-c-tests-%d", (int)getpid());
    char command[512];
    snprintf(command, sizeof command, "mkdir -p %s", tmpdir);
    if (system(command) != 0) return 2;

    CHECK(strcmp(cnn_last_error(), "") == 0, "last error before any failure: %s", cnn_last_error());
    test_version_and_status();
    test_threads();
    test_datasets();
    test_models();
    cnn_model *model = NULL;
    cnn_dataset *test = NULL;
    test_training(&model, &test);
    if (test) test_steps(test);
    if (model && test) test_inference(model, test);
    if (model) test_folders(model);
    if (model && test) test_onnx_and_fine_tuning(model, test);
    if (test) test_distributed_params(test);
    cnn_model_free(model);
    cnn_dataset_free(test);

    snprintf(command, sizeof command, "rm -rf %s", tmpdir);
    if (system(command) != 0) printf("could not remove %s\n", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
