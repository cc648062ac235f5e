"""The precision that "auto" picks, decided on the CPU with the machine's answers replaced.

Each test fixes what the hardware reports (capability, native bfloat16, CUDA) and the timings, so the
decision logic is checked on any machine, and checks that no timing is made where the hardware decides.
"""
import warnings

import pytest
import torch

from vaelib import device, models


@pytest.fixture
def timings(monkeypatch):
    """Replaces the step timing: set `timings.seconds = {precision: seconds}`; records each call."""
    class Timings:
        seconds = {"float32": 0.100, "bfloat16": 0.050}
        calls = []

    def fake_time_step(model, x, precision, steps=2):
        Timings.calls.append((precision, tuple(x.shape)))
        return Timings.seconds[precision]

    device._timed.clear()
    monkeypatch.setattr(device, "time_step", fake_time_step)
    yield Timings
    device._timed.clear()


def cpu(monkeypatch, capability: str, native: bool):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: native)


def conv_batch():
    return models.ConvVAE(latent_dim=2), torch.rand(64, 784)


def test_a_cpu_without_native_bfloat16_trains_in_float32_without_timing(monkeypatch, timings):
    cpu(monkeypatch, "AVX2", native=False)
    choice = device.choose_precision("cpu", *conv_batch())
    assert choice.precision == "float32" and choice.dtype is None
    assert "AVX2" in choice.reason and "no native bfloat16" in choice.reason
    assert timings.calls == []  # the hardware was conclusive


def test_a_cpu_with_native_bfloat16_times_both_and_picks_the_faster(monkeypatch, timings):
    cpu(monkeypatch, "AVX512", native=True)
    model, x = conv_batch()
    choice = device.choose_precision("cpu", model, x)
    assert choice.precision == "bfloat16" and choice.dtype == torch.bfloat16
    assert "50 ms in bfloat16 and 100 ms in float32" in choice.reason and "2.00x" in choice.reason
    assert [p for p, _ in timings.calls] == ["float32", "bfloat16"] * 2  # in turn, twice
    device.choose_precision("cpu", model, x)
    assert len(timings.calls) == 4  # measured once per process for this model and batch


@pytest.mark.parametrize("bfloat16_seconds", [0.100, 0.095, 0.300])
def test_auto_keeps_float32_unless_bfloat16_is_clearly_faster(monkeypatch, timings, bfloat16_seconds):
    cpu(monkeypatch, "AVX512", native=True)
    timings.seconds = {"float32": 0.100, "bfloat16": bfloat16_seconds}
    choice = device.choose_precision("cpu", *conv_batch())
    assert choice.precision == "float32", choice  # equal, 1.05x faster, or 3x slower: not clearly faster
    assert "not 1.1x faster" in choice.reason


def test_forcing_bfloat16_where_it_is_emulated_warns_with_the_measured_slowdown(monkeypatch, timings):
    cpu(monkeypatch, "AVX2", native=False)
    timings.seconds = {"float32": 0.010, "bfloat16": 0.330}
    model, x = conv_batch()
    with pytest.warns(UserWarning, match=r"33\.0x slower than in float32 \(330 ms against 10 ms on 32 images\)"):
        choice = device.choose_precision("cpu", model, x, mixed_precision=True)
    assert choice.precision == "bfloat16"  # forced: obeyed, with the warning
    assert all(shape == (32, 784) for _, shape in timings.calls)  # measured on a small batch


def test_forcing_bfloat16_where_it_is_native_does_not_warn(monkeypatch, timings):
    cpu(monkeypatch, "AVX512", native=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.choose_precision("cpu", *conv_batch(), mixed_precision="bfloat16").precision == "bfloat16"
    assert timings.calls == []


def fake_cuda(monkeypatch, bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")


@pytest.mark.parametrize("bf16, expected", [(True, "bfloat16"), (False, "float16")])
def test_without_a_model_a_gpu_gets_bfloat16_where_supported_else_float16_with_a_scaler(monkeypatch, timings, bf16,
                                                                                        expected):
    fake_cuda(monkeypatch, bf16)
    choice = device.choose_precision("cuda")
    assert choice.precision == expected and "Test GPU" in choice.reason and "not timed" in choice.reason
    assert timings.calls == []
    assert device.grad_scaler(torch.device("cpu"), choice.precision).is_enabled() == (expected == "float16")


@pytest.mark.parametrize("bf16, half", [(True, "bfloat16"), (False, "float16")])
@pytest.mark.parametrize("half_seconds, picked", [(0.050, "half"), (0.095, "float32"), (0.300, "float32")])
def test_on_a_gpu_auto_times_both_and_takes_the_half_precision_only_where_clearly_faster(
        monkeypatch, timings, bf16, half, half_seconds, picked):
    """As on a CPU with native bfloat16: a small network on a large GPU is launch-bound, where bfloat16
    saves nothing (an H200 ran the conv VAE's epoch in 2.77 s in bfloat16 and 2.53 s in float32)."""
    fake_cuda(monkeypatch, bf16)
    timings.seconds = {"float32": 0.100, half: half_seconds}
    choice = device.choose_precision("cuda", *conv_batch())
    assert choice.precision == (half if picked == "half" else "float32")
    assert "Test GPU" in choice.reason and f"in {half} and 100 ms in float32" in choice.reason
    assert [p for p, _ in timings.calls] == ["float32", half] * 2  # in turn, twice


def test_float16_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match="float16' needs a CUDA device"):
        device.choose_precision("cpu", mixed_precision="float16")


@pytest.mark.parametrize("value", ["yes", "bf16", 1, None])
def test_an_unknown_setting_is_refused_with_the_choices(value):
    with pytest.raises(ValueError, match="mixed_precision must be 'auto', 'float32', 'bfloat16'"):
        device.choose_precision("cpu", mixed_precision=value)


def test_float32_and_false_are_the_same_setting():
    assert device.choose_precision("cpu", mixed_precision=False).precision == "float32"
    assert device.choose_precision("cpu", mixed_precision="float32").precision == "float32"


def test_the_real_timing_leaves_the_model_and_the_random_state_alone():
    torch.manual_seed(0)
    model, x = models.VAE(latent_dim=2), torch.rand(16, 784)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    state = torch.get_rng_state()
    assert device.time_step(model, x, "float32", steps=1) > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_model_device_is_the_weights_device_and_the_cpu_for_a_stand_in_without_weights():
    from types import SimpleNamespace

    from vaelib import evaluate, plots
    vae = models.VAE(latent_dim=2, hidden_dim=8)
    assert evaluate.model_device(vae) == torch.device("cpu")
    assert evaluate.model_device(torch.nn.ReLU()) == torch.device("cpu")  # a module with no weights at all
    stand_in = SimpleNamespace(decode=lambda z: vae.decode(z))  # chapter 11's decoder told one digit
    assert evaluate.model_device(stand_in) == torch.device("cpu")
    grid = plots.decode_latent_grid(stand_in, steps=3)  # what failed in chapter 11's book build
    assert grid.shape == (9, 784) and torch.allclose(grid, plots.decode_latent_grid(vae, steps=3))
