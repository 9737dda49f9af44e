"""The Python API: models, datasets, training, evaluation, prediction, files and errors."""
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import JPEGS, REFERENCE, ROOT, SAMPLE, SMALL, TOOL

import cnn


@pytest.fixture(scope="module")
def sample():
    train = cnn.Dataset.from_idx(os.path.join(SAMPLE, "train-images-idx3-ubyte.gz"))
    test = cnn.Dataset.from_idx(os.path.join(SAMPLE, "t10k-images-idx3-ubyte.gz"))
    return train, test


@pytest.fixture(scope="module")
def trained(sample):
    train, test = sample
    model = cnn.Model(SMALL, seed=3)
    history = model.fit(train, epochs=2, batch_size=32, lr=0.01, momentum=0.9, validation=test, verbose=0)
    return model, history


def test_model_properties():
    with cnn.Model(REFERENCE, seed=1) as m:
        assert m.input_shape == (1, 28, 28)
        assert m.num_classes == 10
        assert m.parameter_count == 421642
        assert m.architecture == REFERENCE
        assert "421,642" in m.summary()
        assert m.classes == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="closed"):
        m.num_classes


def test_summary_with_layer_times():
    # Each layer's time per prediction (ms) and share, blocks' inner layers too; the predictions
    # and the table's other columns are unchanged.
    text = "input(3,16,16) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1) batchnorm] relu globalavgpool flatten dense(4)"
    with cnn.Model(text, seed=1) as m:
        x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
        before = m.predict(x)
        table = m.summary(time=True, batch=2, rounds=3)
        assert table.splitlines()[-1] == "batch 2, 3 predictions, %d threads" % cnn.get_num_threads()
        rows = [line for line in table.splitlines()[1:] if "conv(8,3,pad=1)" in line]   # after the architecture
        assert len(rows) == 2 and all(float(r.split()[-2]) > 0 for r in rows)   # ms, then %
        assert "body.0 conv(8,3,pad=1)" in table
        assert np.array_equal(m.predict(x), before)
        for bad in (dict(batch=0), dict(rounds=0), dict(batch=5000), dict(rounds=1.5)):
            with pytest.raises(cnn.InvalidArgumentError, match="summary"):
                m.summary(time=True, **bad)


def test_recompute_blocks_same_model(tmp_path):
    # recompute_blocks trades time for memory: the residual blocks run forward again in backward,
    # and the trained model is the same, byte for byte (dropout inside a block draws the same masks).
    text = ("input(3,16,16) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1) batchnorm relu dropout(0.3) "
            "conv(8,3,pad=1) batchnorm] relu residual[conv(16,3,stride=2,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] "
            "relu globalavgpool flatten dense(4)")
    rng = np.random.default_rng(3)
    x = rng.random((40, 3, 16, 16), dtype=np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    files = []
    for recompute in (False, True):
        with cnn.Model(text, seed=1) as m:
            m.fit(x, y, epochs=2, batch_size=8, lr=0.05, momentum=0.9, recompute_blocks=recompute, verbose=0)
            files.append(tmp_path / ("%s.safetensors" % recompute))
            m.save(files[-1])
    assert files[0].read_bytes() == files[1].read_bytes()
    assert cnn.train_defaults()["recompute_blocks"] is False


def test_fit_evaluate_history(trained, sample):
    model, history = trained
    assert len(history) == 2 and history["loss"][1] < history["loss"][0]
    assert history["val_accuracy"][1] > 0.6
    result = model.evaluate(sample[1])
    assert result["count"] == 500 and result["confusion"].shape == (10, 10)
    assert result["confusion"].sum() == 500
    assert abs(result["accuracy"] - np.trace(result["confusion"]) / 500) < 1e-6
    assert abs(result["accuracy"] - history["val_accuracy"][1]) < 1e-6
    assert model.classes[9] == "Ankle boot"


def test_predict_numpy_interop(trained, sample):
    model, _ = trained
    x, y = sample[1].images(0, 16)
    assert x.dtype == np.float32 and x.shape == (16, 1, 28, 28) and y.shape == (16,)
    p = model.predict(x)
    assert p.shape == (16, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    # Non-contiguous, float64 and a single (C, H, W) image give the same answer.
    wide = np.zeros((16, 1, 28, 56), dtype=np.float32)
    wide[..., ::2] = x
    assert not wide[..., ::2].flags.c_contiguous
    assert np.array_equal(model.predict(wide[..., ::2]), p)
    assert np.allclose(model.predict(x.astype(np.float64)), p)
    assert np.array_equal(model.predict(x[3]), p[3:4])
    # uint8 NHWC and (N, H, W).
    u8 = np.round(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.allclose(model.predict(u8), p, atol=1e-4)
    assert np.allclose(model.predict(u8[..., 0]), p, atol=1e-4)
    logits = model.predict(x, logits=True)
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(e / e.sum(1, keepdims=True), p, atol=1e-5)
    idx, val = cnn.top_k(p, 3)
    assert np.array_equal(idx[:, 0], p.argmax(1)) and np.all(val[:, 0] >= val[:, 1])


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 3, 28, 28), np.float32), ValueError),
    (np.zeros((2, 28, 28), np.float32), ValueError),
    (np.zeros((2, 28, 28, 3), np.uint8), ValueError),
    (np.array([["a"]]), ValueError),
    (np.full((1, 1, 28, 28), np.nan, np.float32), cnn.InvalidArgumentError),
])
def test_predict_bad_shapes(trained, bad, error):
    with pytest.raises(error):
        trained[0].predict(bad)


def test_errors_carry_messages(tmp_path):
    with pytest.raises(cnn.ParseError, match=r"line 1 column 16.*convv"):
        cnn.Model("input(1,28,28) convv(3,3) flatten dense(10)")
    with pytest.raises(cnn.InvalidArgumentError, match="add flatten"):
        cnn.Model("input(1,28,28) dense(10)")
    with pytest.raises(cnn.CNNIOError, match="No such file"):
        cnn.Model.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(cnn.BadFormatError, match="safetensors"):
        cnn.Model.load(bad)
    with pytest.raises(cnn.CNNIOError):
        cnn.Dataset.from_idx(tmp_path / "x-images-idx3-ubyte")
    with pytest.raises(cnn.CNNError) as info:
        cnn.Dataset.from_folder(tmp_path / "nothing")
    assert info.value.status == 3
    assert issubclass(cnn.ParseError, cnn.CNNError) and issubclass(cnn.CNNIOError, OSError)


def test_fit_errors(sample):
    model = cnn.Model(SMALL)
    with pytest.raises(ValueError, match="optimizer"):
        model.fit(sample[0], optimizer="sgdd")
    with pytest.raises(cnn.InvalidArgumentError, match="batch size"):
        model.fit(sample[0], batch_size=0, verbose=0)
    with pytest.raises(cnn.ShapeMismatchError, match="classes"):
        cnn.Model("input(1,28,28) flatten dense(5)").fit(sample[0], verbose=0)
    with pytest.raises(cnn.DivergedError, match="NaN"):
        cnn.Model("input(1,28,28) flatten dense(10)").fit(sample[0], lr=1e38, epochs=2, verbose=0)
    with pytest.raises(TypeError):
        model.fit(np.zeros((3, 1, 28, 28)))


def test_divergence_guard_leaves_finite_weights(sample):
    x, _ = sample[1].images(0, 32)
    for lr, momentum in [(1e6, 0.0), (100.0, 0.9), (1e30, 0.0)]:
        model = cnn.Model("input(1,28,28) flatten dense(10)", seed=1)
        with pytest.raises(cnn.DivergedError, match="the model keeps"):
            model.fit(sample[0], lr=lr, momentum=momentum, epochs=3, verbose=0)
        assert np.isfinite(model.predict(x)).all()
        assert np.isfinite(model.evaluate(sample[1])["loss"])
    # The bound on an exploding loss can be turned off; NaN still stops training.
    model = cnn.Model("input(1,28,28) flatten dense(10)", seed=1)
    with pytest.raises(cnn.DivergedError, match="NaN or infinite"):
        model.fit(sample[0], lr=1e38, epochs=3, verbose=0, divergence_factor=0)
    with pytest.raises(cnn.InvalidArgumentError, match="divergence factor"):
        model.fit(sample[0], verbose=0, divergence_factor=0.5)


def test_memory_limit_and_non_finite_files(tmp_path):
    default = cnn.get_memory_limit()
    assert default >= 1 << 30
    try:
        cnn.set_memory_limit(64 << 20)
        assert cnn.get_memory_limit() == 64 << 20
        with pytest.raises(cnn.CNNMemoryError, match="memory limit"):
            cnn.Model("input(1,28,28) flatten dense(16000)")
        with pytest.raises(cnn.InvalidArgumentError):
            cnn.set_memory_limit(1000)
    finally:
        cnn.set_memory_limit(default)
    path = str(tmp_path / "m.safetensors")
    cnn.Model("input(1,2,2) flatten dense(2)", seed=1).save(path)
    data = bytearray(open(path, "rb").read())
    header = int.from_bytes(data[:8], "little")
    data[8 + header:12 + header] = np.array([np.nan], dtype=np.float32).tobytes()
    open(path, "wb").write(bytes(data))
    with pytest.raises(cnn.BadFormatError, match="'1.weight' holds NaN"):
        cnn.Model.load(path)
    assert np.isnan(cnn.Model.load(path, allow_non_finite=True).predict(np.zeros((1, 1, 2, 2), np.float32))).any()


def test_datasets_from_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((20, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 4, 20)
    d = cnn.Dataset.from_numpy(x, y, classes=["a", "b", "c", "d"])
    assert len(d) == 20 and d.shape == (20, 3, 8, 8) and d.num_classes == 4
    back, labels = d.images()
    assert np.array_equal(back, x) and np.array_equal(labels, y)
    u8 = (x * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    d8 = cnn.Dataset.from_numpy(u8, y)
    assert np.allclose(d8.images()[0], u8.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    gray = cnn.Dataset.from_numpy(np.zeros((5, 6, 7), np.uint8), [0, 1, 0, 1, 0])
    assert gray.shape == (5, 1, 6, 7)
    with pytest.raises(ValueError, match="one label per image"):
        cnn.Dataset.from_numpy(x, y[:5])
    with pytest.raises(cnn.InvalidArgumentError, match="labels"):
        cnn.Dataset.from_numpy(x, y, classes=["a", "b"])
    with pytest.raises(cnn.InvalidArgumentError, match="not finite"):
        cnn.Dataset.from_numpy(np.full((1, 1, 2, 2), np.inf, np.float32), [0])
    model = cnn.Model("input(3,8,8) flatten dense(4)")
    model.fit(d, epochs=1, batch_size=5, verbose=0)
    assert model.classes == ["a", "b", "c", "d"]
    a, b = d.split(0.25, seed=2)
    assert (len(a), len(b)) == (15, 5)


def test_folders_and_jpeg_prediction(tmp_path):
    train = cnn.Dataset.from_folder(os.path.join(JPEGS, "train"))
    with pytest.raises(ValueError, match="model's input size"):
        len(train)
    model = cnn.Model(SMALL, seed=1)
    model.fit(train, epochs=1, flip=True, translate=2, verbose=0)
    assert len(train) == 2000 and train.num_classes == 10 and train.skipped == []
    assert model.classes[0] == "Ankle boot"
    file = os.path.join(JPEGS, "test", "Bag", "018.jpg")
    probabilities = model.predict_jpeg(file)
    assert probabilities.shape == (10,) and abs(probabilities.sum() - 1) < 1e-5
    top = model.predict_jpeg([file, open(file, "rb").read()], top=3)
    assert top[0] == top[1] and len(top[0]) == 3 and top[0][0][1] >= top[0][1][1]
    with pytest.raises(cnn.BadFormatError, match="neither a JPEG nor a PNG"):
        model.predict_jpeg(b"hello")
    with pytest.raises(cnn.CNNIOError):
        model.predict_jpeg(tmp_path / "missing.jpg")
    # A folder with a bad file: skipped and named.
    root = tmp_path / "folder"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "good.jpg").write_bytes(open(file, "rb").read())
    (root / "b" / "good.jpg").write_bytes(open(file, "rb").read())
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    d = cnn.Dataset.from_folder(root, shape=(1, 28, 28))
    assert len(d) == 2 and [os.path.basename(p) for p, _ in d.skipped] == ["bad.jpg"]
    with pytest.raises(cnn.BadFormatError, match="strict"):
        cnn.Dataset.from_folder(root, shape=(1, 28, 28), strict=True)


def test_save_load_and_safetensors(trained, tmp_path, sample):
    model, _ = trained
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = cnn.Model.load(path)
    x, _ = sample[1].images(0, 8)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert loaded.classes == model.classes
    safetensors = pytest.importorskip("safetensors.numpy")
    weights = safetensors.load_file(str(path))
    assert {k: v.shape for k, v in weights.items()} == {"0.weight": (8, 1, 3, 3), "0.bias": (8,), "4.weight": (10, 1352), "4.bias": (10,)}


def test_callback_stops_and_ctrl_c_cancels(sample):
    model = cnn.Model(SMALL, seed=2)
    seen = []
    history = model.fit(sample[0], epochs=3, verbose=0, callback=lambda p: seen.append(p["batch"]) or len(seen) >= 5)
    assert len(seen) == 5 and len(history) == 0
    before = model.predict(sample[1].images(0, 4)[0])

    def interrupt(p):
        if p["batch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        model.fit(sample[0], epochs=3, verbose=0, callback=interrupt)
    after = model.predict(sample[1].images(0, 4)[0])
    assert not np.array_equal(before, after)   # updates before the interrupt were kept
    # A real SIGINT during training: the callback sees it, training stops, KeyboardInterrupt rises.
    # With Python's own Ctrl-C handler, whatever the test was started with (a shell starts a
    # background job with SIGINT ignored, and Python then leaves it ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        def signal_self(p):
            if p["batch"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            model.fit(sample[0], epochs=3, verbose=0, callback=signal_self)
        assert model.predict(sample[1].images(0, 1)[0]).shape == (1, 10)   # the model is still usable
        # SIGINT from another thread reaches Python wherever the main thread next runs Python
        # code, which can be the entry of the next progress callback (outside any try, where
        # ctypes would print the KeyboardInterrupt and drop it): training must stop all the same.
        for _ in range(5):
            def signal_from_thread(p):
                if p["epoch"] == 0 and p["batch"] == 3:
                    threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()
            with pytest.raises(KeyboardInterrupt):
                model.fit(sample[0], epochs=3, verbose=0, callback=signal_from_thread)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_threads_predict_like_one(trained, sample):
    model, _ = trained
    x, _ = sample[1].images(0, 64)
    expected = model.predict(x)
    results, errors = [None] * 8, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = model.predict(x)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, expected) for r in results)


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_create_and_drop_10000_times_stays_flat():
    x = np.zeros((4, 1, 8, 8), np.float32)
    for _ in range(500):  # warm-up: allocator pools, caches
        cnn.Model("input(1,8,8) flatten dense(4)").predict(x)
        cnn.Dataset.from_numpy(x, [0, 1, 2, 3])
    start = rss_mb()
    for i in range(10000):
        m = cnn.Model("input(1,8,8) flatten dense(4)", seed=i)
        m.predict(x)
        d = cnn.Dataset.from_numpy(x, [0, 1, 2, 3])
        if i % 2:
            m.close()
            d.close()
        del m, d
    grown = rss_mb() - start
    assert grown < 20, "RSS grew by %.1f MB" % grown


def test_python_and_cli_give_identical_files(tmp_path, sample):
    if not os.path.exists(TOOL):
        pytest.fail("the cnn tool is not built at %s (make build)" % TOOL)
    data = os.path.join(SAMPLE, "train-images-idx3-ubyte.gz")
    subprocess.run([TOOL, "train", "--spec", SMALL, "--data", data, "--epochs", "2", "--batch-size", "32",
                    "--optimizer", "adam", "--lr", "0.002", "--seed", "7", "--quiet", "--out", str(tmp_path / "cli.safetensors")],
                   check=True)
    model = cnn.Model(SMALL, seed=7)
    model.fit(cnn.Dataset.from_idx(data), epochs=2, batch_size=32, optimizer="adam", lr=0.002, seed=7, verbose=0)
    model.save(tmp_path / "py.safetensors")
    assert (tmp_path / "cli.safetensors").read_bytes() == (tmp_path / "py.safetensors").read_bytes()


def test_example_runs_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bindings", "python", "examples", "train_fashion.py"),
                             "--data", JPEGS, "--epochs", "1", "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and (tmp_path / "fashion.safetensors").exists()
    assert result.stdout.count(".jpg: ") == 5


def test_readme_python_snippet_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    os.symlink(os.path.join(ROOT, "data"), tmp_path / "data")   # the snippet's paths are the repository's
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fashion.safetensors").exists()
