"""What a training library is expected to do: arrays in fit, validation splits, callbacks that see
validation and may save, training in steps with the bytes of one call, class names that must agree,
float pixels in [0, 1], images of any size, datasets that say what they hold."""
import os

import numpy as np
import pytest

import cnn
from conftest import JPEGS, SAMPLE, SMALL


@pytest.fixture(scope="module")
def arrays():
    d = cnn.Dataset.from_idx(os.path.join(SAMPLE, "train-images-idx3-ubyte.gz"))
    x, y = d.images(0, 400)
    return x, y


def test_fit_takes_arrays_and_splits(arrays):
    x, y = arrays
    model = cnn.Model(SMALL, seed=4)
    history = model.fit(x, y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    assert len(history) == 2 and all("val_accuracy" in e for e in history.epochs)
    # The same data as a Dataset split the same way: the same model bytes.
    twin = cnn.Model(SMALL, seed=4)
    train, val = cnn.Dataset.from_numpy(x, y).split(0.2, seed=1)
    twin.fit(train, epochs=2, batch_size=32, validation_data=val, verbose=0)
    np.testing.assert_array_equal(model.predict(x[:8]), twin.predict(x[:8]))
    h = cnn.Model(SMALL, seed=4).fit(x[:300], y[:300], validation_data=(x[300:], y[300:]), verbose=0)
    assert "val_loss" in h.epochs[0]
    with pytest.raises(TypeError, match="labels"):
        model.fit(x)
    with pytest.raises(ValueError, match="exclude"):
        model.fit(x, y, validation_split=0.1, validation_data=(x, y), verbose=0)
    with pytest.raises(TypeError, match="unknown training setting 'learning_rate'"):
        model.fit(x, y, learning_rate=0.1, verbose=0)


def test_callback_sees_validation_and_may_save(arrays, tmp_path):
    x, y = arrays
    model = cnn.Model(SMALL, seed=5)
    ends, saved = [], []

    def callback(p):
        if p.get("epoch_end"):
            ends.append(p)
            model.save(tmp_path / ("epoch%d.safetensors" % p["epoch"]))
            saved.append(p["epoch"])

    model.fit(x, y, epochs=2, batch_size=50, validation_split=0.25, callback=callback, verbose=0)
    assert [e["epoch"] for e in ends] == [0, 1] and all("val_accuracy" in e and "best" in e for e in ends)
    assert ends[0]["best"] is True
    assert cnn.Model.load(tmp_path / "epoch1.safetensors").architecture == model.architecture


def test_save_best_and_early_stopping(arrays, tmp_path):
    x, y = arrays
    model = cnn.Model(SMALL, seed=6)
    best = tmp_path / "best.safetensors"
    history = model.fit(x, y, epochs=40, batch_size=50, lr=0.05, validation_split=0.25, early_stopping=2,
                        monitor="val_loss", save_best=best, verbose=0)
    assert 3 <= len(history) < 40   # stopped early
    losses = history["val_loss"]
    assert losses.index(min(losses)) == len(losses) - 3   # two epochs without improvement after the best
    assert best.exists()
    with pytest.raises(cnn.InvalidArgumentError, match="validation"):
        model.fit(x, y, early_stopping=1, verbose=0)
    with pytest.raises(ValueError, match="monitor"):
        model.fit(x, y, monitor="accuracy", verbose=0)


def test_trainer_in_steps_gives_the_bytes_of_one_fit(arrays, tmp_path):
    x, y = arrays
    settings = dict(epochs=3, batch_size=32, optimizer="adam", lr=0.003, schedule="cosine", flip=True,
                    validation_split=0.2, verbose=0)
    one = cnn.Model(SMALL, seed=8)
    one.fit(x, y, **settings)
    one.save(tmp_path / "one.safetensors")

    model = cnn.Model(SMALL, seed=8)
    trainer = model.trainer(x, y, **settings)
    trainer.run(1)
    assert trainer.progress == (1, 0, False)
    trainer.save_checkpoint(tmp_path / "step.ckpt")
    trainer.close()
    other = cnn.Model(SMALL, seed=1)
    with cnn.Trainer(other, x, y, **settings) as t:
        t.resume(tmp_path / "step.ckpt")
        stops = []
        t._run.callback = lambda p: (not p.get("epoch_end") and p["epoch"] == 1 and p["batch"] == 2 and not stops
                                     and (stops.append(1) or True))
        t.run(5)                       # stopped by the callback inside epoch 2
        assert t.progress == (1, 3, False)
        t.run(5)
        assert t.progress[2]
    other.save(tmp_path / "steps.safetensors")
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "steps.safetensors").read_bytes()
    with pytest.raises(cnn.InvalidArgumentError, match="batch-size 32"):
        with cnn.Trainer(cnn.Model(SMALL), x, y, **dict(settings, batch_size=64)) as t:
            t.resume(tmp_path / "step.ckpt")


def test_class_names_must_agree(arrays, tmp_path):
    x, y = arrays
    four = (y % 4).astype(np.int32)
    names = ["circle", "square", "star", "triangle"]
    with pytest.raises(cnn.ShapeMismatchError, match=r"dense\(4\)"):
        cnn.Model(SMALL).fit(x, four, classes=names, verbose=0)
    model = cnn.Model(SMALL)
    model.fit(x, four, classes=names, allow_extra_outputs=True, verbose=0)
    assert model.classes[:4] == names
    shuffled = cnn.Dataset.from_numpy(x, (four + 3) % 4, classes=names[1:] + names[:1])   # the same meaning, another order
    with pytest.raises(cnn.ShapeMismatchError, match="circle"):
        model.evaluate(shuffled)
    mapped = model.evaluate(shuffled, map_classes=True)
    direct = model.evaluate(cnn.Dataset.from_numpy(x, four, classes=names))
    assert mapped["accuracy"] == direct["accuracy"] and mapped["loss"] == direct["loss"]


def test_pixels_and_layouts_are_checked(arrays):
    x, y = arrays
    model = cnn.Model(SMALL)
    with pytest.raises(cnn.InvalidArgumentError, match="divide 8-bit values by 255"):
        model.predict(x[:2] * 255)
    with pytest.raises(cnn.InvalidArgumentError, match=r"\[0, 1\]"):
        cnn.Dataset.from_numpy(x * 255, y)
    rgb = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="transpose"):
        cnn.Dataset.from_numpy(rgb, np.zeros(4))
    with pytest.raises(ValueError, match="transpose"):
        cnn.Model("input(3,32,32) flatten dense(2)").predict(rgb)


def test_predict_image_any_size(arrays):
    x, y = arrays
    model = cnn.Model(SMALL, seed=2)
    model.fit(x, y, verbose=0)
    gray = np.rint(x[0, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(model.predict_image(gray), model.predict(gray[None, :, :, None])[0])
    big = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    p = model.predict_image(big)
    assert p.shape == (10,) and abs(p.sum() - 1) < 1e-4
    assert model.predict_image([big, gray]).shape == (2, 10)
    assert len(model.predict_image(big, top=3)) == 3
    try:
        from PIL import Image
    except ImportError:
        return
    np.testing.assert_array_equal(model.predict_image(Image.fromarray(big)), p)
    np.testing.assert_allclose(model.predict_image(Image.fromarray(big).convert("RGBA")), p)


def test_dataset_says_what_it_holds(tmp_path):
    d = cnn.Dataset.from_folder(os.path.join(JPEGS, "test"), shape=(1, 28, 28))
    assert len(d) == 500 and d.classes[0] == "Ankle boot" and len(d.classes) == 10
    assert "500 images of 1x28x28, 10 classes [Ankle boot" in repr(d)
    assert d.path(0).startswith(os.path.join(JPEGS, "test")) and d.path(0).endswith(".jpg")
    assert len(d.paths) == 500
    x, y = d.images(0, 3)
    assert cnn.Dataset.from_numpy(x, y).path(0) is None


def test_weight_decay_without_biases_and_norms_and_random_erasing(arrays, tmp_path):
    x, y = arrays
    defaults = cnn.train_defaults()
    assert defaults["decay_bias_and_norm"] is True and defaults["erase"] == 0
    text = "input(1,28,28) conv(4,3) batchnorm relu flatten dense(10)"
    runs = {}
    for name, settings in {"plain": {}, "exempt": {"decay_bias_and_norm": False}, "erase": {"erase": 0.5}}.items():
        model = cnn.Model(text, seed=2)
        model.fit(x, y, epochs=1, batch_size=50, weight_decay=0.05, verbose=0, **settings)
        model.save(tmp_path / (name + ".safetensors"))
        runs[name] = (tmp_path / (name + ".safetensors")).read_bytes()
    assert len(set(runs.values())) == 3     # each setting changes the result
    model = cnn.Model(text, seed=2)
    model.fit(x, y, epochs=1, batch_size=50, weight_decay=0.05, verbose=0, erase=0.5)
    model.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == runs["erase"]   # seeded
    with pytest.raises(cnn.InvalidArgumentError, match="erase"):
        cnn.Model(text).fit(x, y, erase=1.5, verbose=0)


def test_new_head_and_frozen_layers(arrays, tmp_path):
    """Fine-tuning: a new head for other classes, the layers before it frozen (bit for bit, batch
    norm's statistics included) while the head trains; freezing every layer is refused."""
    from safetensors.numpy import load_file
    x, y = arrays
    text = "input(1,28,28) conv(4,3,bias=false) batchnorm relu maxpool(2) flatten dense(16) relu dense(10)"
    base = cnn.Model(text, seed=3)
    base.fit(x, y, epochs=1, batch_size=50, verbose=0)
    model = base.new_head(4, seed=5)
    assert model.architecture == text.replace("dense(10)", "dense(4)") and model.classes == ["0", "1", "2", "3"]
    model.save(tmp_path / "before.safetensors")
    keep = y < 4
    model.fit(x[keep], y[keep], epochs=2, batch_size=20, lr=0.05, momentum=0.9, weight_decay=0.01, freeze_until=5, verbose=0)
    model.save(tmp_path / "after.safetensors")
    before, after = load_file(str(tmp_path / "before.safetensors")), load_file(str(tmp_path / "after.safetensors"))
    for name in before:
        frozen = int(name.split(".")[0]) < 5
        if name.endswith("num_batches_tracked"):
            continue
        assert np.array_equal(before[name], after[name]) == frozen, name
    assert model.evaluate(x[keep], y[keep])["accuracy"] > 0.5
    with pytest.raises(cnn.InvalidArgumentError, match="at least the last one must train"):
        model.fit(x[keep], y[keep], freeze_until=8, verbose=0)
    with pytest.raises(cnn.InvalidArgumentError, match="not a dense layer"):
        cnn.Model("input(1,28,28) flatten dense(10) relu").new_head(3)
