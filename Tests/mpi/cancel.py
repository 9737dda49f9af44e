"""Under mpirun -np 2: rank 1's callback alone asks to stop after batch 10 of epoch 2; both ranks
stop at the same batch with the same model, and going on (a second fit) ends where an
uninterrupted run ends, bit for bit. Prints "cancel: ok" on rank 0.

    mpirun -np 2 python Tests/mpi/cancel.py OUT-PREFIX
"""
import os
import sys

import cnn

rank, size = cnn.launcher_rank()
root = os.path.join(os.path.dirname(__file__), "..", "..")
train = cnn.Dataset.from_idx(os.path.join(root, "data", "fashion-mnist-sample", "train-images-idx3-ubyte.gz"))
spec = "input(1,28,28) conv(8,3,pad=1) batchnorm relu maxpool(2) flatten dropout(0.2) dense(10)"
settings = dict(epochs=3, batch_size=32, lr=0.05, momentum=0.9, seed=4, distributed=True, verbose=0)

whole = cnn.Model(spec, seed=4)
whole.fit(train, **settings)

stopped = cnn.Model(spec, seed=4)
trainer = cnn.Trainer(stopped, train, callback=lambda p: rank == 1 and p.get("epoch") == 1 and p.get("batch") == 10,
                      **{k: v for k, v in settings.items() if k != "verbose"})
trainer.run(3)  # stops: rank 1 asked after batch 10 (0-based) of epoch 1
assert trainer.progress == (1, 11, False), trainer.progress
stopped.save("%s.stopped.%d.safetensors" % (sys.argv[1], rank))
trainer.run(3)  # goes on from the next batch to the end
assert trainer.progress == (3, 0, True), trainer.progress
stopped.save("%s.%d.safetensors" % (sys.argv[1], rank))
whole.save("%s.whole.%d.safetensors" % (sys.argv[1], rank))
if rank == 0:
    print("cancel: both ranks stopped after epoch 2's batch 11, went on to the end")
