"""Peers on the same networks and batches: PyTorch (CPU, and CUDA when present), scikit-learn's
MLPClassifier (one ``partial_fit`` epoch) and the literal per-sample ``backprop.reference``
(the smallest network only)."""

import pytest

from backprop import bench


def test_pytorch_train_step(benchmark, network, config):
    torch = pytest.importorskip("torch")
    name, sizes, batch = network
    # time_torch does its own timing; here the benchmark wraps one measured call
    result = benchmark.pedantic(bench.time_torch, args=(sizes, batch, "cpu", bench.blas_threads(),
                                                        1, 0.0), rounds=1, iterations=1)
    assert result["train"] > 0 and result["forward"] > 0
    benchmark.extra_info.update(sizes=sizes, batch=batch, torch=torch.__version__,
                                samples_per_s=batch / result["train"])


def test_sklearn_epoch(benchmark, network, config):
    pytest.importorskip("sklearn")
    name, sizes, batch = network
    n = config["epoch_samples"]
    result = benchmark.pedantic(bench.time_sklearn, args=(sizes, batch, n, 1, 0.0),
                                rounds=1, iterations=1)
    assert result["epoch"] > 0
    benchmark.extra_info.update(sizes=sizes, batch=batch, samples_per_s=n / result["epoch"])


def test_reference_step(benchmark, config):
    name, sizes, batch = config["speed_networks"][0]
    result = benchmark.pedantic(bench.time_reference, args=(sizes, batch, 1), rounds=1,
                                iterations=1)
    assert result["train"] > 0
    benchmark.extra_info.update(sizes=sizes, batch=batch, samples_per_s=batch / result["train"])
