"""``python -m backprop doctor``: the deep sigmoid network's vanishing gradients are diagnosed
and it does not learn; the same depth with ReLU and He initialisation does."""

from __future__ import annotations

import pytest

from backprop import __main__ as cli
from backprop import doctor

pytest.importorskip("sklearn")


def test_doctor_fast_mode_diagnoses_and_plots(tmp_path, capsys):
    """Two epochs (the fast mode): the diagnosis, the printed table and the plot."""
    plot = tmp_path / "norms.png"
    cli.main(["doctor", "--epochs", "2", "--plot", str(plot), "--backend", "numpy"])
    text = capsys.readouterr().out
    assert "vanishing gradients: ‖∂L/∂W‖ falls" in text and "no problem found" in text
    assert text.count("\n   21 ") == 1                     # one row per layer, 21 of them
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_doctor_full_run_shows_the_seeds_table():
    """The claim of the demonstration, at its defaults: the sigmoid network does not learn in
    20 epochs (under 20% test accuracy on 10 classes), the treated one reaches 95%."""
    lines = []
    sick, treated = doctor.run(out=lines.append)
    assert [v.kind for v in sick["diagnosis"].verdicts] == ["vanishing"]
    g = sick["diagnosis"].grad_norms
    assert max(g) / g[0] > 1e10 and len(g) == doctor.DEPTH + 1
    assert treated["diagnosis"].healthy
    assert sick["accuracy"] < 0.2 and treated["accuracy"] >= 0.95


def test_doctor_refuses_bad_arguments(capsys):
    for argv in (["doctor", "--depth", "0"], ["doctor", "--epochs", "-1"]):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        assert exit.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "positive" in err


@pytest.mark.parametrize("plot, match", [("/nonexistent/x.png", "does not exist"),
                                         ("x.txt", "image extension"), ("x", "image extension")])
def test_doctor_checks_the_plot_path_before_training(plot, match, capsys, monkeypatch):
    """A plot path matplotlib cannot write fails at once (it failed after ~7 s of training)."""
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --plot")
    monkeypatch.setattr(doctor, "networks", no_training)
    with pytest.raises(SystemExit) as exit:
        cli.main(["doctor", "--plot", plot])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plot" in err and match in err
    with pytest.raises(ValueError, match=f"plot: .*{match}"):
        doctor.run(plot=plot)
