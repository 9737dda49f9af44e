"""Data-parallel training from Python: run it under an MPI launcher.

    mpirun -np 2 python bindings/python/examples/mpi_train.py OUT-PREFIX

Every rank builds the same model and data and calls fit(distributed=True): batch_size is the
global batch, split over the ranks, and every rank ends with the same model. Rank 0 prints; each
rank saves OUT-PREFIX.RANK.safetensors (identical files) to show it.
"""
import os
import sys

import numpy as np

import cnn

rank, size = cnn.launcher_rank()
root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
train = cnn.Dataset.from_idx(os.path.join(root, "data", "fashion-mnist-sample", "train-images-idx3-ubyte.gz"))
model = cnn.Model("input(1,28,28) conv(8,3,pad=1) relu maxpool(2) flatten dense(10)", seed=3)
history = model.fit(train, epochs=2, batch_size=32, lr=0.05, momentum=0.9, distributed=True, verbose=0)
if rank == 0:
    print("rank 0 of %d: loss %.4f accuracy %.4f after %d epochs" % (size, history["loss"][-1], history["accuracy"][-1],
                                                                    len(history.epochs)))
model.save("%s.%d.safetensors" % (sys.argv[1], rank))
