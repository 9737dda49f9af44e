/* mpi_train.c - data-parallel training from C: run it under an MPI launcher.
 *
 *   mpirun -np 2 ./mpi_train TRAIN-IMAGES.idx.gz OUT-PREFIX
 *
 * Every rank loads the same data and model and calls cnn_model_train with params.distributed = 1
 * (MPI_COMM_WORLD; libcnn.so loads Open MPI at run time, this program does not link it). Each
 * rank then saves OUT-PREFIX.RANK.safetensors: the files are identical. The rank comes from the
 * launcher's environment, as a program that does not call MPI itself finds it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cnn.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s TRAIN-IMAGES OUT-PREFIX\n", argv[0]);
        return 2;
    }
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    cnn_dataset *data = NULL;
    cnn_model *model = NULL;
    if (cnn_dataset_from_idx(argv[1], NULL, &data) ||
        cnn_model_create("input(1,28,28) conv(8,3,pad=1) relu maxpool(2) flatten dense(10)", 7, &model)) {
        fprintf(stderr, "rank %s: %s\n", rank ? rank : "?", cnn_last_error());
        return 1;
    }
    cnn_train_params params;
    cnn_train_params_default(&params);
    params.epochs = 1;
    params.batch_size = 32; /* the global batch: 16 images per rank with 2 ranks */
    params.momentum = 0.9f;
    params.distributed = 1;
    if (cnn_model_train(model, data, &params) != CNN_OK) {
        /* Errors inside training reach every rank at the same batch. */
        fprintf(stderr, "rank %s: %s\n", rank ? rank : "?", cnn_last_error());
        return 1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s.%s.safetensors", argv[2], rank ? rank : "0");
    if (cnn_model_save(model, path)) {
        fprintf(stderr, "%s\n", cnn_last_error());
        return 1;
    }
    cnn_evaluation e;
    if (cnn_model_evaluate(model, data, &e, NULL) == CNN_OK && (!rank || atoi(rank) == 0))
        printf("trained: loss %.4f, accuracy %.4f on the training data\n", e.loss, e.accuracy);
    cnn_model_free(model);
    cnn_dataset_free(data);
    return 0;
}
