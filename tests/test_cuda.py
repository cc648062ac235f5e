"""On a CUDA machine: the library takes CPU tensors for a model on the GPU, and fit neither waits for the
host each batch nor loses its divergence check. Skipped where there is no CUDA device (run them on one with
`.venv/bin/python -m pytest tests/test_cuda.py tests/test_train.py -q`)."""
import pytest
import torch

from vaelib import evaluate, inference, judge, models, plots, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def on_gpu(mnist_train):
    torch.manual_seed(0)
    model = models.VAE(latent_dim=2)
    train.fit(model, mnist_train[0][:1024], epochs=1, device="cuda", progress=False)
    assert evaluate.model_device(model).type == "cuda"
    return model, mnist_train[0][:64]  # the images stay on the CPU


def test_every_metric_takes_cpu_images_for_a_gpu_model_and_returns_cpu_values(on_gpu):
    model, x = on_gpu
    cpu = models.VAE(latent_dim=2)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    assert evaluate.evaluate(model, x)["loss"] == pytest.approx(evaluate.evaluate(cpu, x)["loss"], rel=1e-3)
    mu, logvar = inference.refine_posterior(model, x, steps=3)
    assert mu.device.type == logvar.device.type == "cpu"
    for values in (evaluate.elbo(model, x), evaluate.elbo(model, x, mu, logvar),
                   evaluate.importance_weighted_bound(model, x, k=8, posterior=(mu, logvar)),
                   evaluate.encode_dataset(model, x)[0], evaluate.active_units(model, x)[1],
                   plots.decode_latent_grid(model, steps=3), plots.traversals(model, steps=3),
                   plots.interpolate(model, x[0], x[1], steps=3)[0]):
        assert values.device.type == "cpu" and torch.isfinite(values).all()


def test_the_judge_reads_cpu_images_with_a_gpu_model(on_gpu):
    _, x = on_gpu
    labels, confidence = judge.predict(x, judge.DigitClassifier().cuda())
    from vaelib import widgets
    explorer = widgets.LatentExplorer(on_gpu[0])
    assert explorer.decoded.device.type == "cpu" and explorer.decoded.shape == (784,)
    assert labels.device.type == confidence.device.type == "cpu" and labels.shape == (64,)


def test_fit_on_the_gpu_still_names_the_epoch_and_batch_of_a_divergence(mnist_train):
    torch.manual_seed(0)
    with pytest.raises(train.TrainingDiverged, match=r"at epoch 1, batch \d+ of 8: training diverged"):
        train.fit(models.VAE(latent_dim=2), mnist_train[0][:1024], epochs=1, lr=1e12, device="cuda", progress=False)


def test_fit_on_the_gpu_follows_the_cpu(mnist_train):
    """The same seed, the same batches (the shuffle is drawn on the CPU): close losses on either device."""
    rows = {}
    for name in ("cpu", "cuda"):
        torch.manual_seed(0)
        rows[name] = train.fit(models.VAE(latent_dim=2), mnist_train[0][:2048], epochs=1, device=name,
                               progress=False)[0]
    assert rows["cuda"]["train_loss"] == pytest.approx(rows["cpu"]["train_loss"], rel=0.02)
