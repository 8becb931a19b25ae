"""Plots measure what they say (the data behind each figure equals the numbers computed
another way: split_stats losses, a hand-counted per-class accuracy, scikit-learn's
confusion matrix, the run's history) and save without a display, atomically, never over
an existing file unless asked."""
import copy

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from erasus.core.stats import split_stats  # noqa: E402
from erasus.models import wrap  # noqa: E402
from erasus import visualization as viz  # noqa: E402


@pytest.fixture(scope="module")
def run():
    from erasus.testing import tiny_problem
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, holdout = tiny_problem()
    u = ErasusUnlearner(copy.deepcopy(model), strategy="gradient_ascent")  # moves the model for sure
    res = u.fit(forget, retain, holdout, progress=False, max_steps=30, min_steps=0, stopping="none")
    return model, res.model, res, forget, retain, holdout


def test_loss_distributions_plot_the_split_losses_and_save_png_and_svg(run, tmp_path):
    original, unlearned, _, forget, retain, holdout = run
    models = {"original": original, "unlearned": unlearned}
    data = viz.loss_distribution_data(models, {"forget": forget, "held-out": holdout})
    from erasus.utils.data import ordered_loader

    np.testing.assert_allclose(data["forget"]["unlearned"], split_stats(wrap(unlearned), ordered_loader(forget))["loss"],
                               rtol=1e-6)
    assert not np.allclose(data["forget"]["unlearned"], data["forget"]["original"])  # the run moved them
    fig = viz.loss_distributions(models, {"forget": forget, "held-out": holdout}, path=tmp_path / "loss",
                                 formats=("png", "svg"))
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 2  # one step histogram per model
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "loss.svg").read_text()[:500]
    with pytest.raises(FileExistsError, match="overwrite"):
        viz.loss_distributions(models, {"forget": forget}, path=tmp_path / "loss.png")
    before = (tmp_path / "loss.png").stat().st_mtime_ns
    viz.loss_distributions(models, {"forget": forget}, path=tmp_path / "loss.png", overwrite=True)
    assert (tmp_path / "loss.png").stat().st_mtime_ns >= before
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_per_class_accuracy_and_prediction_shift_count_what_they_show(run, tmp_path):
    from sklearn.metrics import confusion_matrix

    original, unlearned, _, forget, retain, _ = run
    pred, true = viz.predictions(unlearned, retain)
    classes, acc = viz.per_class_accuracy_data({"u": unlearned}, retain)
    for c in classes:
        if (true == c).any():
            assert acc["u"][c] == pytest.approx(float((pred[true == c] == c).mean()))
    viz.per_class_accuracy({"original": original, "unlearned": unlearned}, retain, path=tmp_path / "acc")
    assert (tmp_path / "acc.png").exists()
    n = int(max(pred.max(), true.max())) + 1
    M = viz.prediction_shift_data(unlearned, None, retain, n_classes=n)
    np.testing.assert_array_equal(M, confusion_matrix(pred, true, labels=range(n)))
    same = viz.prediction_shift_data(unlearned, unlearned, retain, n_classes=n)
    assert same.sum() == len(pred) and np.trace(same) == len(pred)
    shift = viz.prediction_shift_data(original, unlearned, retain, n_classes=n)
    pa, pb = viz.predictions(original, retain)[0], pred
    for i in range(n):
        for j in range(n):
            assert shift[i, j] == int(((pa == i) & (pb == j)).sum())
    viz.prediction_shift(original, unlearned, forget, path=tmp_path / "shift.svg", formats=("svg",))
    assert (tmp_path / "shift.svg").exists()


def test_training_history_draws_the_runs_losses(run, tmp_path):
    *_, res, _, _, _ = run
    fig = viz.training_history(res, path=tmp_path / "history")
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), res.history["loss"])
    assert (tmp_path / "history.png").exists()
    with pytest.raises(Exception, match="history"):
        viz.training_history({"nothing": 1})


def test_save_figure_rejects_unknown_formats(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with pytest.raises(Exception, match="png, svg and pdf"):
        viz.save_figure(fig, tmp_path / "x", formats=("bmp",))


def test_html_report_stands_alone_and_carries_the_verdict(run, tmp_path):
    import re

    from erasus.evaluation.benchmark import BenchmarkReport, MetricResult

    original, unlearned, res, forget, retain, holdout = run
    bench = BenchmarkReport("general", "retrain", 0.95)
    bench.results.append(MetricResult("forget_acc", 0.5, (0.4, 0.6), 0.45, "retrained", (0.01, 0.09), (0.05, 0.1),
                                      "PARTIAL", note="<b>not html</b>"))
    path = viz.run_report(res, tmp_path / "r.html", report=bench, models={"original": original, "unlearned": unlearned},
                          splits={"forget": forget, "held-out": holdout}, title="Forget <12> samples")
    text = (tmp_path / "r.html").read_text()
    assert path is not None and "Forget &lt;12&gt; samples" in text and "&lt;b&gt;not html&lt;/b&gt;" in text
    assert 'class="PARTIAL"' in text and "gradient_ascent" in text and res.stop_reason[:20] in text
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', text)
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in imgs)  # history + losses
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing loaded from elsewhere
    with pytest.raises(FileExistsError):
        viz.ReportGenerator().write(tmp_path / "r.html")
    with pytest.raises(Exception, match="verdict"):
        viz.ReportGenerator().add_verification(object())
