"""Training on one's own data, through the CLI, on scikit-learn's bundled datasets.

Class names in a csv, --standardize, --test-fraction 0, --split-seed, a validation part with
--patience, --out DIR (module, weights, metrics, split, curve), the hint to standardize, and
the generated module's predict applying the saved scaling.  scikit-learn is in the test
extra: it provides the data only (nothing here compares with it; benchmarks/own_data.py does).
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from symbackprop import data as data_module
from symbackprop.checkpoint import load_module
from symbackprop.cli import main
from symbackprop.data import load_dataset, standardizer, unscaled_feature
from symbackprop.errors import InputError
from symbackprop.progress import Bar

datasets = pytest.importorskip("sklearn.datasets")

FINAL = re.compile(
    r"^final: train_loss=(\S+) test_loss=(\S+) train_(accuracy|rmse)=(\S+) test_\3=(\S+)$"
)


def final(out: str) -> dict[str, float]:
    match = FINAL.match(out.rstrip("\n").splitlines()[-1])
    assert match, out[-500:]
    train_loss, test_loss, metric, train_metric, test_metric = match.groups()
    return {
        "train_loss": float(train_loss),
        "test_loss": float(test_loss),
        f"train_{metric}": float(train_metric),
        f"test_{metric}": float(test_metric),
    }


def spec(
    path: Path, inputs: int, outputs: int, *, loss: str, output: str, hidden: str = "tanh"
) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            name = "{path.stem}"
            inputs = {inputs}
            loss = "{loss}"
            [[layers]]
            units = 16
            activation = "{hidden}"
            [[layers]]
            units = {outputs}
            activation = "{output}"
            [train]
            optimizer = "adam"
            lr = 0.01
            epochs = 60
            batch_size = 16
            """
        )
    )
    return path


def named_csv(path: Path, X: np.ndarray, names: list[str]) -> Path:
    """A csv with a header and class NAMES as the last column."""
    lines = [",".join([f"f{i}" for i in range(X.shape[1])] + ["class"])]
    for row, name in zip(X, names, strict=True):
        lines.append(",".join([*(repr(float(v)) for v in row), name]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def iris(in_tmp: Path) -> tuple[Path, Path]:
    bunch = datasets.load_iris()
    names = [str(bunch.target_names[t]) for t in bunch.target]
    csv = named_csv(in_tmp / "iris.csv", bunch.data, names)
    return spec(in_tmp / "iris.toml", 4, 3, loss="cross_entropy", output="softmax"), csv


# --- through the CLI, dataset by dataset --------------------------------------------------


def test_iris_by_class_name_standardized_into_a_folder(iris, capsys) -> None:
    toml, csv = iris
    code = main(["train", str(toml), "--data", str(csv), "--standardize", "--out", "run"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "classes: 0 = setosa, 1 = versicolor, 2 = virginica" in out
    numbers = final(out)
    assert numbers["test_accuracy"] >= 0.9
    run = Path("run")
    names = {p.name for p in run.iterdir()}
    assert names == {"iris.py", "weights.npz", "metrics.json", "split.json", "training_curve.png"}
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["setosa", "versicolor", "virginica"]
    assert metrics["standardized"] is True and metrics["certificate"] is True
    assert len(metrics["epochs"]) == metrics["epochs_run"] == 60
    assert metrics["final"]["test_accuracy"] == pytest.approx(numbers["test_accuracy"], abs=1e-6)
    assert all(e["test_accuracy"] is not None for e in metrics["epochs"])

    split = json.loads((run / "split.json").read_text())
    parts = [split["train"], split["validation"], split["test"]]
    assert sorted(sum(parts, [])) == list(range(150)) and len(split["test"]) == 30

    # the folder's module and weights predict raw features: the scaling is in the weights
    module = load_module((run / "iris.py").read_text(), "iris_out")
    weights = module.load(str(run / "weights.npz"))
    assert list(weights["classes"]) == ["setosa", "versicolor", "virginica"]
    mean, scale = standardizer(datasets.load_iris().data[split["train"]])
    assert np.array_equal(weights["x_mean"], mean) and np.array_equal(weights["x_scale"], scale)
    bunch = datasets.load_iris()
    test = np.array(split["test"])
    right = np.mean(module.predict(weights, bunch.data[test]) == bunch.target[test])
    assert right == pytest.approx(numbers["test_accuracy"], abs=1e-6)


def test_wine_raw_features_get_the_hint_and_standardized_train_well(in_tmp, capsys) -> None:
    bunch = datasets.load_wine()
    np.savetxt("wine.csv", np.c_[bunch.data, bunch.target], delimiter=",", fmt="%.10g")
    toml = spec(in_tmp / "wine.toml", 13, 3, loss="cross_entropy", output="softmax")
    assert main(["train", str(toml), "--data", "wine.csv"]) == 0
    raw = capsys.readouterr().out
    assert "note: the features are not standardized (feature 13 has mean" in raw
    assert "try --standardize" in raw
    assert main(["train", str(toml), "--data", "wine.csv", "--standardize"]) == 0
    scaled = capsys.readouterr().out
    assert "note:" not in scaled
    assert final(scaled)["test_accuracy"] >= 0.94 > final(raw)["test_accuracy"]
    # diverging on raw features: the message suggests standardizing too
    linear = spec(in_tmp / "linear.toml", 13, 1, loss="mse", output="identity", hidden="identity")
    code = main(["train", str(linear), "--data", "wine.csv", "--optimizer", "sgd", "--lr", "0.01"])
    captured = capsys.readouterr()
    assert code == 1 and "training diverged" in captured.err
    assert "try --standardize" in captured.err and len(captured.err.splitlines()) == 1


def test_breast_cancer_names_with_one_sigmoid_output(in_tmp, capsys) -> None:
    bunch = datasets.load_breast_cancer()
    names = [str(bunch.target_names[t]) for t in bunch.target]  # malignant = 0, benign = 1
    named_csv(in_tmp / "cancer.csv", bunch.data, names)
    toml = spec(in_tmp / "cancer.toml", 30, 1, loss="binary_cross_entropy", output="sigmoid")
    args = ["train", str(toml), "--data", "cancer.csv", "--standardize", "--epochs", "30"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "classes: 0 = benign, 1 = malignant" in out  # sorted names: 0 is the first
    assert final(out)["test_accuracy"] >= 0.94


def test_diabetes_regression_without_a_test_part(in_tmp, capsys) -> None:
    bunch = datasets.load_diabetes()
    y = (bunch.target - bunch.target.mean()) / bunch.target.std()
    np.savetxt("diabetes.csv", np.c_[bunch.data, y], delimiter=",", fmt="%.12g")
    toml = spec(in_tmp / "diabetes.toml", 10, 1, loss="mse", output="identity")
    args = ["train", str(toml), "--data", "diabetes.csv", "--standardize", "--epochs", "20"]
    assert main([*args, "--test-fraction", "0", "--out", "all.npz"]) == 0
    out = capsys.readouterr().out
    numbers = final(out)
    assert np.isnan(numbers["test_loss"]) and np.isnan(numbers["test_rmse"])
    assert numbers["train_rmse"] < 0.8  # better than the mean (RMSE 1 on standardized y)
    assert "no test part (--test-fraction 0)" in out
    with np.load("all.npz") as weights:
        assert {"x_mean", "x_scale", "W1", "b1", "W2", "b2"} == set(weights.files)


def test_split_seed_is_apart_from_seed(iris, capsys) -> None:
    toml, csv = iris
    base = ["train", str(toml), "--data", str(csv), "--standardize", "--epochs", "3"]

    def run(*extra: str) -> tuple[list[int], float]:
        folder = f"run{len(list(Path().glob('run*')))}"
        assert main([*base, *extra, "--out", folder]) == 0
        capsys.readouterr()
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        split = json.loads((Path(folder) / "split.json").read_text())
        return split["test"], metrics["final"]["train_loss"]

    test_a, loss_a = run("--seed", "0", "--split-seed", "5")
    test_b, loss_b = run("--seed", "1", "--split-seed", "5")
    test_c, _ = run("--seed", "0", "--split-seed", "6")
    test_d, loss_d = run("--seed", "5")  # without --split-seed the seed splits too
    assert test_a == test_b and loss_a != loss_b  # same split, another initialization
    assert test_a != test_c
    assert test_d == test_a and loss_d != loss_a


def test_early_stopping_keeps_the_best_epoch(iris, capsys) -> None:
    toml, csv = iris
    args = ["train", str(toml), "--data", str(csv), "--standardize", "--epochs", "400"]
    args += ["--lr", "0.05", "--val-fraction", "0.2", "--patience", "5", "--out", "run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    metrics = json.loads(Path("run/metrics.json").read_text())
    epochs = metrics["epochs"]
    assert metrics["stopped_early"] is True and len(epochs) < 400
    assert "stopped early after epoch" in out
    best = min(range(len(epochs)), key=lambda i: epochs[i]["val_loss"])
    assert metrics["best_epoch"] == epochs[best]["epoch"] == len(epochs) - 5
    # the weights kept are those of the best epoch: its validation loss is the final one
    assert metrics["final"]["val_loss"] == pytest.approx(epochs[best]["val_loss"], rel=1e-12)
    split = json.loads(Path("run/split.json").read_text())
    assert len(split["validation"]) == len(split["test"]) == 30


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--patience", "3"], "--patience"),
        (["--val-fraction", "0.9"], "--val-fraction"),
        (["--val-fraction", "-0.1"], "--val-fraction"),
        (["--test-fraction", "1"], "--test-fraction"),
        (["--val-fraction", "0.2", "--patience", "0"], "--patience"),
        (["--split-seed", "-1"], "--seed"),
    ],
)
def test_bad_own_data_flags_exit_2_and_write_nothing(iris, capsys, extra, field) -> None:
    toml, csv = iris
    code = main(["train", str(toml), "--data", str(csv), "--out", "run", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and field in err, err
    assert not Path("run").exists()


def test_out_that_is_a_file_not_npz_is_refused(iris, capsys) -> None:
    toml, csv = iris
    Path("notes.txt").write_text("keep me")
    assert main(["train", str(toml), "--data", str(csv), "--out", "notes.txt"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert Path("notes.txt").read_text() == "keep me"


# --- reading class names ----------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_class_names_are_sorted_and_reported(tmp_path) -> None:
    path = write(tmp_path / "d.csv", "a,b,kind\n1,2,dog\n3,4,cat\n5,6,dog\n7,8,cat\n9,9,eel\n")
    data = load_dataset(path, outputs=3, classification=True, test_fraction=0.4)
    assert data.class_names == ("cat", "dog", "eel")
    rows = np.r_[data.indices["train"], data.indices["test"]]
    labels = np.r_[data.y_train, data.y_test]
    expected = np.array([1, 0, 1, 0, 2])  # cat 0, dog 1, eel 2, in file order
    assert np.array_equal(labels, expected[rows])


def test_csv_without_header_and_quoted_names(tmp_path) -> None:
    path = write(tmp_path / "d.csv", '1,2,"a b"\n3,4,c\n5,6,"a b"\n7,8,c\n')
    data = load_dataset(path, outputs=2, classification=True, test_fraction=0.5)
    assert data.class_names == ("a b", "c") and len(data.X_train) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,0\n3,4,dog\n", "row 2: the class label is 'dog', but earlier rows' labels are not"),
        ("1,2,dog\n3,4,1\n", "row 2: the class label is a number, but earlier rows' labels"),
        ("1,2,dog\n3,4, \n", "row 2: the class label is empty"),
        ("1,2,a\n3,4,b\n5,6,c\n", "the class labels name 3 classes (a, b, c) but the spec has 2"),
        ("a,b,kind\n1,2,dog\n3,x,cat\n", "row 3, column 2: 'x' is not a number"),
    ],
)
def test_csv_class_name_errors(tmp_path, text, message) -> None:
    path = write(tmp_path / "d.csv", text)
    with pytest.raises(InputError) as caught:
        load_dataset(path, outputs=2, classification=True)
    assert message in str(caught.value)


def test_names_after_many_number_rows_are_refused_at_their_row(tmp_path, monkeypatch) -> None:
    rows = [f"{i % 7},{i % 5},{i % 2}" for i in range(30_000)] + ["1,2,cat"]
    path = write(tmp_path / "d.csv", "a,b,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match="row 30002: the class label is 'cat'"):
        load_dataset(path, outputs=2, classification=True)
    monkeypatch.setattr(data_module, "_TEXT_BLOCK", 64)  # names spread over many blocks
    text = "\n".join(f"{i},{i % 3},{'abc'[i % 3]}" for i in range(2000)) + "\n"
    data = load_dataset(write(tmp_path / "n.csv", text), outputs=3, classification=True)
    assert data.class_names == ("a", "b", "c")
    rows = np.r_[data.indices["train"], data.indices["test"]]
    assert np.array_equal(np.r_[data.y_train, data.y_test], rows % 3)


def test_regression_csv_with_text_stays_an_error(tmp_path) -> None:
    path = write(tmp_path / "d.csv", "1,2,0.5\n3,4,dog\n")
    with pytest.raises(InputError, match="'dog' is not a number"):
        load_dataset(path, outputs=1, classification=False)


# --- splits -------------------------------------------------------------------------------


def test_validation_part_leaves_the_test_part_alone() -> None:
    plain = load_dataset("digits", outputs=10, classification=True, seed=3)
    with_val = load_dataset("digits", outputs=10, classification=True, seed=3, val_fraction=0.1)
    assert np.array_equal(plain.indices["test"], with_val.indices["test"])
    assert np.array_equal(plain.X_test, with_val.X_test)
    train, val = with_val.indices["train"], with_val.indices["validation"]
    assert len(val) == 180 and not set(train) & set(val)
    assert sorted(np.r_[train, val]) == sorted(plain.indices["train"])
    assert set(np.unique(with_val.y_val)) == set(range(10))  # stratified
    X, _ = data_module.load_digits()
    assert np.array_equal(with_val.X_val, X[val])


def test_test_fraction_zero_trains_on_everything() -> None:
    data = load_dataset("digits", outputs=10, classification=True, test_fraction=0)
    assert len(data.X_train) == 1797 and data.X_test.shape == (0, 64)
    assert sorted(data.indices["train"]) == list(range(1797))


def test_the_default_split_is_unchanged() -> None:
    # the split of every earlier run, recomputed the way the first version did
    X, y = data_module.load_digits()
    rng_split = data_module.split(X, y, 0.2, 0)
    data = load_dataset("digits", outputs=10, classification=True)
    assert np.array_equal(data.X_train, rng_split[0]) and np.array_equal(data.X_test, rng_split[2])


# --- scaling ----------------------------------------------------------------------------


def test_standardizer_matches_scikit_learn() -> None:
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X = datasets.load_wine().data
    X = np.c_[X, np.full(len(X), 7.0)]  # a constant feature: scale 1
    mean, scale = standardizer(X)
    scaler = preprocessing.StandardScaler().fit(X)
    assert np.allclose(mean, scaler.mean_, rtol=1e-14) and np.allclose(scale, scaler.scale_)
    assert scale[-1] == 1.0
    assert unscaled_feature((X - mean) / scale) is None
    assert unscaled_feature(X).startswith("feature 13 has mean 747")


# --- progress -----------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    screen = Terminal()
    with Bar("training", screen) as bar:
        bar.update(0.5, "epoch 5/10")
    assert "\rtraining [############............]  50%  epoch 5/10" in screen.getvalue()
    assert screen.getvalue().endswith("\r")  # wiped when done
    quiet = io.StringIO()
    with Bar("training", quiet) as bar:
        bar.update(0.5)
    assert quiet.getvalue() == ""


def test_train_draws_no_progress_when_stderr_is_not_a_terminal(iris, capsys) -> None:
    toml, csv = iris
    assert main(["train", str(toml), "--data", str(csv), "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "\r" not in captured.out


def test_train_draws_progress_on_a_terminal(iris, capsys, monkeypatch) -> None:
    toml, csv = iris
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    assert main(["train", str(toml), "--data", str(csv), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and final(out)  # the last line stays machine-readable
    drawn = screen.getvalue()
    assert "\rtraining [" in drawn and "epoch 2/2" in drawn and "\rcertificate [" in drawn


# --- NumPy -> PyTorch -> NumPy ------------------------------------------------------------


def test_round_trip_through_pytorch(iris, capsys) -> None:
    """Train with the CLI (standardized, class names), export, load the weights into the
    PyTorch model, train on there with torch.optim, load them back: the outputs agree to
    1e-12 in float64 at every stage, and continuing in NumPy from the same point with the
    same batches gives PyTorch's weights."""
    torch = pytest.importorskip("torch")
    toml, csv = iris
    assert main(["train", str(toml), "--data", str(csv), "--standardize", "--out", "run"]) == 0
    assert main(["export", str(toml), "--torch", "-o", "iris_torch.py"]) == 0
    capsys.readouterr()
    numpy_module = load_module(Path("run/iris.py").read_text(), "iris_numpy")
    torch_module = load_module(Path("iris_torch.py").read_text(), "iris_torch")
    params = numpy_module.load("run/weights.npz")
    X = datasets.load_iris().data

    model = torch_module.Model()
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in numpy_module.to_state_dict(params).items()}
    )
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(X)).numpy()
    reference = numpy_module.forward(params, X)
    assert np.max(np.abs(outputs - reference)) <= 1e-12 * np.max(np.abs(reference))

    # go on training in PyTorch, and in NumPy from the same weights on the same batches
    labels = torch.from_numpy(datasets.load_iris().target)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    moved = {k: v.copy() for k, v in params.items()}
    model.train()
    for step in range(20):
        rows = np.random.default_rng(step).choice(150, 16, replace=False)
        optimizer.zero_grad()
        torch_module.loss(model, torch.from_numpy(X[rows]), labels[rows]).backward()
        optimizer.step()
        numpy_module.train_step(moved, X[rows], datasets.load_iris().target[rows], 0.05)
    back = numpy_module.from_state_dict(model.state_dict())
    assert set(back) == {*params} - {"classes"}  # the scaling comes back; names are NumPy's
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(X)).numpy()
    again = numpy_module.forward(back, X)
    assert np.max(np.abs(outputs - again)) <= 1e-12 * np.max(np.abs(again))
    for key in numpy_module.PARAMETERS:
        scale = np.max(np.abs(moved[key]))
        assert np.max(np.abs(back[key] - moved[key])) <= 1e-12 * scale, key


def test_learning_rates_are_torch_schedulers_and_the_metrics_file_records_them(iris, capsys):
    torch = pytest.importorskip("torch")
    toml, csv = iris
    args = ["train", str(toml), "--data", str(csv), "--epochs", "7", "--out", "run"]
    assert main([*args, "--schedule", "cosine", "--min-lr", "0.001"]) == 0
    capsys.readouterr()
    module = load_module(Path("run/iris.py").read_text(), "iris_rates")
    recorded = [e["lr"] for e in json.loads(Path("run/metrics.json").read_text())["epochs"]]
    assert recorded == module.learning_rates(0.01, 7, "cosine", min_lr=0.001)
    for schedule, make in (
        ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, eta_min=0.001)),
    ):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
        scheduler, expected = make(optimizer), []
        for _ in range(7):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        rates = module.learning_rates(0.01, 7, schedule, step_size=2, gamma=0.5, min_lr=0.001)
        assert rates == expected, schedule
