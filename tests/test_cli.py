"""The command line (backprop/cli.py, backprop/datafile.py) and the model file's metadata
(backprop/state.py): train / predict / evaluate on CSV, Parquet, .npy and .npz with the user's
own labels; bad files and arguments end with one line on stderr and a non-zero status."""

from __future__ import annotations

import csv
import inspect
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop import Network
from backprop import cli
from backprop.state import check_metadata

ROOT = Path(__file__).resolve().parents[1]
SPECIES = np.array(["setosa", "versicolor", "virginica"])


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m backprop ARGS`` in a new process (stdout and stderr captured: no TTY)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BACKPROP_DEBUG", None)
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([sys.executable, "-m", "backprop", *args], text=True, env=env,
                          timeout=120, **streams)


def cli_main(capsys, *args: str) -> str:
    cli.main(list(args))
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory):
    """iris as CSV (text labels), Parquet, .npy (target column 4) and .npz (X, y)."""
    from sklearn.datasets import load_iris
    folder = tmp_path_factory.mktemp("iris")
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with open(folder / "iris.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names + ["species"])
        writer.writerows([*map(repr, row), label] for row, label in zip(X.tolist(), SPECIES[y]))
    np.save(folder / "iris.npy", np.column_stack([X, y]))
    np.savez(folder / "iris.npz", X=X, y=y + 10)
    return folder, X, y


def test_train_predict_evaluate_csv_with_text_labels(iris_files, tmp_path, capsys):
    folder, X, y = iris_files
    model = tmp_path / "model.bp"
    out = cli_main(capsys, "train", str(folder / "iris.csv"), "--target", "species",
                   "--layers", "16", "--epochs", "60", "--learning-rate", "0.02",
                   "--backend", "numpy", "--out", str(model))
    assert "60 epochs" in out and model.exists()
    net = Network.load(model)
    assert net.loss_function.name == "cross_entropy" and net.layer_sizes == [4, 16, 3]
    assert net.metadata == {"feature_names": ["sepal_length", "sepal_width", "petal_length",
                                              "petal_width"],
                            "target": "species", "classes": list(SPECIES)}
    predictions = list(csv.reader(io.StringIO(
        cli_main(capsys, "predict", str(model), str(folder / "iris.csv")))))
    assert predictions[0] == ["species"] and len(predictions) == 151
    labels = np.array([row[0] for row in predictions[1:]])
    assert set(labels) <= set(SPECIES) and (labels == SPECIES[y]).mean() > 0.9
    # the labels are the argmax of the probabilities, read back with their class columns
    assert cli_main(capsys, "predict", str(model), str(folder / "iris.csv"), "--proba",
                    "--out", str(tmp_path / "p.csv")) == ""
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(SPECIES)
    proba = np.array(rows[1:], dtype=float)
    np.testing.assert_allclose(proba, net.predict(X), rtol=1e-6)
    np.testing.assert_array_equal(SPECIES[proba.argmax(axis=1)], labels)
    line = cli_main(capsys, "evaluate", str(model), str(folder / "iris.csv"), "--target",
                    "species")
    accuracy = float(line.split("accuracy ")[1].split()[0])
    assert accuracy == pytest.approx((labels == SPECIES[y]).mean(), abs=1e-4)


def test_regression_and_numpy_files(iris_files, tmp_path, capsys):
    folder, X, y = iris_files
    # .npy: the target is a column index; a float column is regressed with mse
    model = tmp_path / "reg.bp"
    cli_main(capsys, "train", str(folder / "iris.npy"), "--target", "0", "--layers", "8",
             "--epochs", "40", "--learning-rate", "0.01", "--backend", "numpy",
             "--out", str(model))
    net = Network.load(model)
    assert net.loss_function.name == "mse" and net.layer_sizes == [4, 8, 1]
    assert net.metadata == {"target": 0}
    line = cli_main(capsys, "evaluate", str(model), str(folder / "iris.npy"), "--target", "0")
    r2 = float(line.split("r2 ")[1].split()[0])
    features = np.column_stack([X[:, 1:], y])
    residual = ((net.predict(features)[:, 0] - X[:, 0]) ** 2).sum()
    assert r2 == pytest.approx(1 - residual / ((X[:, 0] - X[:, 0].mean()) ** 2).sum(), abs=1e-4)
    # predict drops the target column an .npy still holds
    rows = list(csv.reader(io.StringIO(cli_main(capsys, "predict", str(model),
                                                str(folder / "iris.npy")))))
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, 0],
                               net.predict(features)[:, 0], rtol=1e-6)
    # .npz: arrays X and y; integer labels 10, 11, 12 come back as themselves
    model = tmp_path / "cls.bp"
    cli_main(capsys, "train", str(folder / "iris.npz"), "--target", "y", "--epochs", "30",
             "--learning-rate", "0.02", "--backend", "numpy", "--out", str(model))
    assert Network.load(model).metadata["classes"] == [10, 11, 12]
    rows = list(csv.reader(io.StringIO(cli_main(capsys, "predict", str(model),
                                                str(folder / "iris.npz")))))
    assert rows[0] == ["y"] and {r[0] for r in rows[1:]} <= {"10", "11", "12"}


def test_binary_loss_and_parquet(iris_files, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder, X, y = iris_files
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame["big"] = y == 2
    frame.to_parquet(tmp_path / "d.parquet")
    model = tmp_path / "b.bp"
    cli_main(capsys, "train", str(tmp_path / "d.parquet"), "--target", "big", "--loss",
             "binary_cross_entropy", "--epochs", "30", "--learning-rate", "0.02",
             "--backend", "numpy", "--out", str(model))
    net = Network.load(model)
    assert net.layer_sizes[-1] == 1 and net.metadata["classes"] == [False, True]
    rows = list(csv.reader(io.StringIO(cli_main(capsys, "predict", str(model),
                                                str(tmp_path / "d.parquet"), "--proba"))))
    assert rows[0] == ["False", "True"]
    p = net.predict(X)[:, 0]
    np.testing.assert_allclose(np.array(rows[1:], dtype=float), np.column_stack([1 - p, p]),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.skipif("validation_split" not in inspect.signature(Network.fit).parameters,
                    reason="needs Network.fit(validation_split=)")
def test_validation_split(iris_files, tmp_path, capsys):
    folder, _, _ = iris_files
    out = cli_main(capsys, "train", str(folder / "iris.csv"), "--target", "species",
                   "--epochs", "3", "--validation-split", "0.2", "--backend", "numpy",
                   "--out", str(tmp_path / "m.bp"))
    assert "val_loss" in out


def test_errors_are_one_line_without_traceback(iris_files, tmp_path):
    folder, _, _ = iris_files
    csv_file = str(folder / "iris.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5,6\n")
    model = tmp_path / "m.bp"
    assert run("train", csv_file, "--target", "species", "--epochs", "2", "--backend",
               "numpy", "--out", str(model)).returncode == 0
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.zeros((3, 2)))
    cases = [
        (("train", str(tmp_path / "missing.csv"), "--target", "a", "--out", "x"), 1,
         "missing.csv: no such file"),
        (("train", str(bad), "--target", "a", "--out", "x"), 1, "not a valid CSV file"),
        (("train", csv_file, "--target", "colour", "--out", "x"), 1,
         "unknown column 'colour'"),
        (("train", csv_file, "--target", "species", "--layers", "16,x", "--out", "x"), 2,
         "--layers"),
        (("predict", str(model), str(narrow)), 1, "has 2 feature columns, the model expects 4"),
        (("predict", str(tmp_path / "none.bp"), csv_file), 1, "no such model file"),
        (("predict", csv_file, csv_file), 1, "not a backprop state file"),
        (("train", csv_file, "--target", "species", "--loss", "mse", "--out", "x"), 1,
         "--loss mse needs a numeric target"),
        (("frobnicate",), 2, "invalid choice"),
    ]
    for args, status, message in cases:
        result = run(*args)
        assert result.returncode == status, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("backprop: error: ")


def test_version_info_and_quiet_when_piped(iris_files, tmp_path):
    from backprop import __version__
    assert run("--version").stdout.strip() == f"backprop {__version__}"
    result = run("info")
    assert result.returncode == 0
    assert f"backprop {__version__}" in result.stdout and "numpy" in result.stdout
    assert "backend numpy (cpu): available" in result.stdout
    folder, _, _ = iris_files
    result = run("train", str(folder / "iris.csv"), "--target", "species", "--epochs", "2",
                 "--backend", "numpy", "--out", str(tmp_path / "m.bp"))
    assert result.returncode == 0 and result.stderr == ""      # no progress bar when piped
    assert len(result.stdout.strip().splitlines()) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_progress_per_batch_on_a_terminal(iris_files, tmp_path):
    pytest.importorskip("tqdm")
    import pty
    folder, _, _ = iris_files
    leader, follower = pty.openpty()
    try:
        result = run("train", str(folder / "iris.csv"), "--target", "species", "--epochs", "2",
                     "--batch-size", "50", "--backend", "numpy", "--out", str(tmp_path / "m.bp"),
                     stdout=follower, stderr=subprocess.PIPE)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert "6/6" in result.stderr and "batch" in result.stderr   # 2 epochs x 3 batches


def test_main_module_is_the_cli():
    import backprop.__main__ as entry
    assert entry.main is cli.main


# ---------------------------------------------------------------------- the metadata

def test_metadata_travels_with_save_and_pickle(tmp_path):
    net = Network([2, 3, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    assert net.metadata is None
    net.metadata = {"feature_names": ["x", "y"], "target": "kind", "classes": ["a", 1, 2.5]}
    net.save(tmp_path / "m.bp")
    assert Network.load(tmp_path / "m.bp").metadata == net.metadata
    assert pickle.loads(pickle.dumps(net)).metadata == net.metadata


@pytest.mark.parametrize("metadata, message", [
    ([1], "JSON object"),
    ({"colour": 1}, "unknown keys"),
    ({"feature_names": ["x"]}, "feature_names must be 2"),
    ({"feature_names": ["x", "x"]}, "feature_names must be 2 distinct"),
    ({"target": 1.5}, "target must be"),
    ({"classes": ["a", "b"]}, "classes must be 3"),
    ({"classes": ["a", "b", "a"]}, "classes must be 3 distinct"),
    ({"classes": ["a", "b", [1]]}, "classes must be 3"),
])
def test_bad_metadata_is_refused_before_writing(tmp_path, metadata, message):
    net = Network([2, 3, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    net.metadata = metadata
    with pytest.raises(ValueError, match=message):
        net.save(tmp_path / "m.bp")
    assert not (tmp_path / "m.bp").exists()


def test_metadata_rules():
    check_metadata({"classes": [False, True]}, [2, 1], "binary_cross_entropy")
    with pytest.raises(ValueError, match="only for the classification losses"):
        check_metadata({"classes": [0]}, [2, 1], "mse")


def test_fit_progress_counts_batches(backend, capsys):
    """fit(verbose="progress") counts batches, also where an epoch is one compiled call."""
    pytest.importorskip("tqdm")
    from support import make_network
    net = make_network(backend, [3, 4, 2], ["tanh", "softmax"], "cross_entropy", seed=0)
    X = np.random.default_rng(0).normal(size=(25, 3))
    net.fit(X, (X[:, 0] > 0).astype(int), epochs=3, batch_size=10, learning_rate=0.1,
            verbose="progress")
    err = capsys.readouterr().err
    assert "9/9" in err and "batch" in err            # 3 epochs x 3 batches (10, 10, 5)


def test_csv_without_pandas(tmp_path, monkeypatch):
    """Without pandas, CSV is read with the csv module: numbers, integers and text columns."""
    from backprop import datafile
    path = tmp_path / "d.csv"
    path.write_text("x,y,label\n1.5,2,cat\n-3,4,dog\n")
    monkeypatch.setitem(sys.modules, "pandas", None)        # import pandas -> ImportError
    table = datafile.read(str(path))
    assert table.columns["x"].tolist() == [1.5, -3.0]
    assert table.columns["y"].dtype.kind == "i"
    assert table.columns["label"].tolist() == ["cat", "dog"]
    X, y, names, key = datafile.split(table, str(path), "label")
    np.testing.assert_array_equal(X, [[1.5, 2], [-3, 4]])
    assert names == ["x", "y"] and key == "label" and y.tolist() == ["cat", "dog"]
    path.write_text("x,y\n1,2\n3\n")
    with pytest.raises(datafile.DataError, match="line 3 has 1 fields"):
        datafile.read(str(path))


def test_missing_values_and_output_folder(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": pd.array([1, None, 3, 4], dtype="Int64"), "b": [1.0, 2, 3, 4],
                          "label": ["x", "y", None, "x"]})
    frame.to_parquet(tmp_path / "na.parquet")
    with pytest.raises(SystemExit):
        cli.main(["train", str(tmp_path / "na.parquet"), "--target", "b", "--out",
                  str(tmp_path / "m.bp"), "--backend", "numpy"])
    assert "column 'a' has missing or non-finite values" in capsys.readouterr().err
    frame["a"] = frame["a"].fillna(2)
    frame.to_parquet(tmp_path / "na.parquet")
    with pytest.raises(SystemExit):
        cli.main(["train", str(tmp_path / "na.parquet"), "--target", "label", "--out",
                  str(tmp_path / "m.bp"), "--backend", "numpy"])
    assert "the target 'label' has missing values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", str(tmp_path / "na.parquet"), "--target", "b", "--out",
                  str(tmp_path / "nowhere" / "m.bp"), "--backend", "numpy"])
    assert "--out: the folder" in capsys.readouterr().err


def cli_error(capsys, *args: str) -> str:
    """Run the command line in this process; it must end with status 1 or 2 and one line."""
    with pytest.raises(SystemExit) as end:
        cli.main(list(args))
    err = capsys.readouterr().err
    assert end.value.code in (1, 2), err
    assert err.startswith("backprop: error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_a_diverged_training_fails_in_one_line_and_saves_nothing(iris_files, tmp_path):
    """--learning-rate 1e30: status 1, one line naming the divergence and the remedy, no
    file, no Python warning text (NumPy's overflow warnings, quoting a source line)."""
    folder, _, _ = iris_files
    model = tmp_path / "x.bp"
    for backend in ("numpy", "numba"):
        result = run("train", str(folder / "iris.csv"), "--target", "species",
                     "--learning-rate", "1e30", "--backend", backend, "--out", str(model))
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("backprop: error: training diverged at epoch 0")
        assert "lower --learning-rate" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Warning" not in result.stderr and result.stdout == ""
        assert not model.exists()


def test_warnings_are_one_line(capsys, monkeypatch):
    import warnings

    def warns(args):
        warnings.warn("something odd\n  on two lines", RuntimeWarning)
    monkeypatch.setattr(cli, "info", warns)
    cli.main(["info"])
    assert capsys.readouterr().err == "backprop: warning: something odd on two lines\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_out_and_inputs_that_are_not_regular_files(iris_files, tmp_path, capsys, monkeypatch):
    """--out a directory or a FIFO is refused by name before training (the FIFO stays a
    FIFO, no temporary file is left); a model or data path that is a directory or a device
    says what it is; a symbolic --out is followed."""
    folder, _, _ = iris_files
    data = str(folder / "iris.csv")
    train = ("train", data, "--target", "species", "--epochs", "1", "--backend", "numpy")
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    assert "--out 'dir' is a directory; expected a regular file" in cli_error(
        capsys, *train, "--out", "dir")
    assert "--out" in cli_error(capsys, *train, "--out", str(tmp_path / "fifo"))
    assert os.path.exists(tmp_path / "fifo") and not os.path.isfile(tmp_path / "fifo")
    assert sorted(os.listdir(tmp_path)) == ["dir", "fifo"]
    (tmp_path / "link.bp").symlink_to(tmp_path / "dir" / "m.bp")
    cli.main([*train, "--out", str(tmp_path / "link.bp")])
    capsys.readouterr()
    assert (tmp_path / "link.bp").is_symlink() and (tmp_path / "dir" / "m.bp").is_file()
    model = str(tmp_path / "link.bp")
    assert "/dev/null: is a device, not a file" in cli_error(capsys, "predict", model,
                                                             "/dev/null")
    assert "dir: is a directory, not a file" in cli_error(capsys, "predict", model, "dir")
    assert "dir: is a directory, not a model file" in cli_error(capsys, "predict", "dir", data)
    assert "none.bp: no such model file" in cli_error(capsys, "predict", "none.bp", data)


def test_bad_train_options_are_named(iris_files, tmp_path, capsys, monkeypatch):
    folder, _, _ = iris_files
    out = str(tmp_path / "m.bp")
    train = ("train", str(folder / "iris.csv"), "--target", "species", "--backend", "numpy",
             "--out", out)
    assert "argument --seed: expected an integer >= 0, got -5" in cli_error(
        capsys, *train, "--seed", "-5")
    assert "argument --epochs" in cli_error(capsys, *train, "--epochs", "0")
    assert "argument --batch-size" in cli_error(capsys, *train, "--batch-size", "-1")
    assert "--activation softmax is an output activation" in cli_error(
        capsys, *train, "--activation", "softmax")
    assert "--activation: unknown 'swish'" in cli_error(capsys, *train, "--activation", "swish")
    monkeypatch.setattr(cli, "physical_memory", lambda: 2 ** 16)     # a machine of 64 KiB
    err = cli_error(capsys, *train, "--layers", "1000")
    assert "--layers 1000: training this network needs at least" in err
    assert "more than this machine's 0.0 GiB" in err
    assert not os.path.exists(out)
    cli.main([*train, "--layers", "8", "--epochs", "1"])             # small enough to fit
    assert os.path.isfile(out)


def test_training_memory_estimate():
    """Parameters, gradients and the optimizer's buffers, plus four batch × units arrays per
    layer: [4, 64, 3] in float32 with Adam (m, v) and batches of 32."""
    params = (4 + 1) * 64 + (64 + 1) * 3
    assert cli.training_bytes([4, 64, 3], 32, 4, 2) == 4 * (params * 4 + 4 * 32 * (64 + 3))
    assert cli.training_bytes([4, 10 ** 8, 3], 32, 4, 2) > 50 * 2 ** 30
