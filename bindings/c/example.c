/* example.c - train the reference network on Fashion-MNIST, save it, load it back and predict a
 * few test images, with nothing but libcnn.so.
 *
 *   cc example.c $(pkg-config --cflags --libs cnn) -o example
 *   ./example TRAIN TEST [EPOCHS] [IMAGE.jpg ...]
 *
 * TRAIN and TEST are IDX images files (t10k-images-idx3-ubyte.gz) or folders of class sub-folders
 * of JPEGs (data/fashion-mnist-jpeg/train); the JPEG files at the end are classified by name.
 */
#include <cnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* An IDX file or a JPEG folder (loaded at the model's input size). */
static cnn_status open_data(const char *path, cnn_dataset **out) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        int32_t skipped = 0;
        cnn_status s = cnn_dataset_from_folder(path, 1, 28, 28, NULL, out);
        if (s == CNN_OK && cnn_dataset_skipped_count(*out, &skipped) == CNN_OK && skipped > 0)
            printf("%s: %d files skipped\n", path, (int)skipped);
        return s;
    }
    return cnn_dataset_from_idx(path, NULL, out);
}

static int32_t progress(const cnn_progress *p, void *user_data) {
    (void)user_data;
    if (p->epoch_end)
        printf("epoch %d/%d: loss %.4f, accuracy %.4f, test accuracy %.4f\n", (int)p->epoch + 1,
               (int)p->epochs, p->loss, p->accuracy, p->val_accuracy);
    else if (p->batch % 100 == 0)
        printf("  batch %d/%d: loss %.4f, %.0f images/s\n", (int)p->batch, (int)p->batches, p->loss,
               p->images_per_second);
    return 0; /* non-zero cancels training */
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, cnn_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TRAIN TEST [EPOCHS] [IMAGE.jpg ...]\n", argv[0]);
        return 2;
    }
    cnn_model *model = NULL, *loaded = NULL;
    cnn_dataset *train = NULL, *test = NULL;
    printf("SwiftCNN %s (%s)\n", cnn_version_string(), cnn_runtime_info());
    if (cnn_model_create("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu "
                         "maxpool(2) flatten dense(128) relu dense(10)", 1, &model) != CNN_OK)
        return fail("create");
    if (open_data(argv[1], &train) != CNN_OK) return fail(argv[1]);
    if (open_data(argv[2], &test) != CNN_OK) return fail(argv[2]);

    cnn_train_params params;
    cnn_train_params_default(&params);
    params.epochs = argc > 3 ? atoi(argv[3]) : 1;
    params.learning_rate = 0.01f;
    params.momentum = 0.9f;
    params.validation = test;
    params.progress = progress;
    if (cnn_model_train(model, train, &params) != CNN_OK) return fail("train");
    if (cnn_model_save(model, "example.safetensors") != CNN_OK) return fail("save");
    if (cnn_model_load("example.safetensors", &loaded) != CNN_OK) return fail("load");
    printf("saved and reloaded example.safetensors\n");

    /* Predict the first five test images with the reloaded model. */
    static float images[5 * 28 * 28], probabilities[5 * 10];
    int32_t labels[5], top[5 * 2];
    if (cnn_dataset_get(test, 0, 5, images, labels) != CNN_OK) return fail("dataset_get");
    if (cnn_model_predict(loaded, images, 5, probabilities) != CNN_OK) return fail("predict");
    if (cnn_top_k(probabilities, 5, 10, 2, top, NULL) != CNN_OK) return fail("top_k");
    for (int i = 0; i < 5; i++) {
        const char *first = "", *second = "", *truth = "";
        cnn_model_class_name(loaded, top[2 * i], &first);
        cnn_model_class_name(loaded, top[2 * i + 1], &second);
        cnn_model_class_name(loaded, labels[i], &truth);
        printf("test image %d: %s %.3f, %s %.3f (label: %s)\n", i, first,
               probabilities[10 * i + top[2 * i]], second, probabilities[10 * i + top[2 * i + 1]], truth);
    }
    /* JPEG files by name: decoded, brought to 28x28 gray, normalized like the training data. */
    for (int i = 4; i < argc; i++) {
        int32_t best = 0;
        const char *name = "";
        if (cnn_model_predict_jpeg_file(loaded, argv[i], NULL, probabilities) != CNN_OK) {
            fprintf(stderr, "%s\n", cnn_last_error());
            continue;
        }
        cnn_top_k(probabilities, 1, 10, 1, &best, NULL);
        cnn_model_class_name(loaded, best, &name);
        printf("%s: %s %.3f\n", argv[i], name, probabilities[best]);
    }
    cnn_dataset_free(train);
    cnn_dataset_free(test);
    cnn_model_free(model);
    cnn_model_free(loaded);
    return 0;
}
