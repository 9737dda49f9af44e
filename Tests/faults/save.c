/* save.c - saves a model for the write-fault and kill tests.
 *
 *   save SEED PATH          creates the reference network from SEED and saves it to PATH
 *   save SEED PATH loop     saves models from SEED and SEED+1 alternately to PATH, forever
 *
 * Exit status: 0 when the save succeeded, 1 with the library's message on stderr when not. */
#include <cnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *arch = "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)";
    cnn_model *models[2] = {NULL, NULL};
    uint64_t seed = strtoull(argv[1], NULL, 10);
    for (int i = 0; i < 2; i++) {
        if (cnn_model_create(arch, seed + (uint64_t)i, &models[i]) != CNN_OK) {
            fprintf(stderr, "%s\n", cnn_last_error());
            return 2;
        }
    }
    if (argc > 3 && strcmp(argv[3], "loop") == 0) {
        for (unsigned long i = 0;; i++) {
            if (cnn_model_save(models[i % 2], argv[2]) != CNN_OK) {
                fprintf(stderr, "%s\n", cnn_last_error());
                return 1;
            }
        }
    }
    if (cnn_model_save(models[0], argv[2]) != CNN_OK) {
        fprintf(stderr, "%s\n", cnn_last_error());
        return 1;
    }
    return 0;
}
