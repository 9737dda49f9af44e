"""What ``Model.fit`` returns: the loss and accuracy of every epoch."""


class History:
    """``history.epochs`` is a list of dicts with ``loss``, ``accuracy`` and, with validation data,
    ``val_loss`` and ``val_accuracy``; ``history["loss"]`` gives one column."""

    def __init__(self):
        self.epochs = []

    def __getitem__(self, key):
        return [e.get(key) for e in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        return "History(%r)" % self.epochs

    def plot(self, path):
        """Draws loss and accuracy per epoch (training and validation) into an image file."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
        x = list(range(1, len(self.epochs) + 1))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for axis, key in ((left, "loss"), (right, "accuracy")):
            axis.plot(x, self[key], marker="o", label="training")
            if any(v is not None for v in self["val_" + key]):
                axis.plot(x, self["val_" + key], marker="o", label="validation")
            axis.set_xlabel("epoch")
            axis.set_title(key)
            axis.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
