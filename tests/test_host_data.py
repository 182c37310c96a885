"""Training data kept on the host (a NumPy array or a memory map).

The host draws each block's minibatch indices from the run's key and
gathers the rows, so a run with the data on the host is the run with the
data on the devices: bit for bit, on one device or several, in blocks of any
length, and across a checkpoint and resume.
"""

import os
import shutil

import numpy as np
import pytest

import jax
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.learn import host_data

STEPS, BATCH = 40, 16


@pytest.fixture(scope="module")
def memmap(tmp_path_factory):
    x = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    path = tmp_path_factory.mktemp("host") / "x.dat"
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    out[:] = x
    out.flush()
    return x, np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)


def _sliced():
    return ne.ScoreMatching(
        ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
        optax.adam(1e-2),
        ne.SlicedScoreMatching(),
    )


def _cd():
    return ne.EBM(
        ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
        optax.adam(1e-2),
        method=ne.CD(num_steps=2),
    )


def _same(a, b):
    for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])


@pytest.mark.parametrize(
    "make,num_devices", [(_sliced, None), (_cd, 4)], ids=["sliced-1", "cd-4"]
)
def test_a_memmap_run_is_the_device_run(memmap, make, num_devices, monkeypatch):
    x, mm = memmap
    kwargs = dict(batch_size=BATCH, progress_bar=False, num_devices=num_devices)
    device = make().run(jax.random.key(0), STEPS, x, **kwargs)
    # blocks of 3 steps: chunks, block boundaries and the last partial block
    monkeypatch.setattr(host_data, "BLOCK_BYTES", 3 * BATCH * 2 * 4)
    host = make().run(jax.random.key(0), STEPS, mm, **kwargs)
    _same(device, host)


def test_only_the_drawn_rows_are_read(memmap, monkeypatch):
    x, _ = memmap
    read = []

    passes = []

    class Counting(host_data.HostRows):
        def __getitem__(self, index):
            if isinstance(index, np.ndarray):  # the minibatches' gathers
                read.append(index.size)
            return super().__getitem__(index)

        def chunks(self):
            passes.append(1)
            return super().chunks()

    rows = Counting(x, BATCH)
    _sliced().run(jax.random.key(0), STEPS, rows, batch_size=BATCH, progress_bar=False)
    assert sum(read) == STEPS * BATCH
    assert len(passes) == 1  # one pass over the data: the check for NaN


def test_the_default_negative_sampler_fits_its_start_on_host_data(memmap):
    # TemperedPCD fits a Gaussian (mean and covariance) to the data; on the
    # host it is summarised in chunks, in float64
    x, mm = memmap
    make = lambda: ne.EBM(
        ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
        optax.adam(1e-2),
        method=ne.TemperedPCD(num_steps=2),
    )
    run = lambda d: make().run(
        jax.random.key(0), 10, d, batch_size=BATCH, progress_bar=False
    )
    device, host = run(x), run(mm)
    state = host.state.sampler_state
    np.testing.assert_allclose(state["q0_mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    cov = lambda r: (
        np.asarray(r.state.sampler_state["q0_chol"])
        @ np.asarray(r.state.sampler_state["q0_chol"]).T
    )
    np.testing.assert_allclose(cov(host), cov(device), rtol=1e-5)
    np.testing.assert_allclose(
        host.history["loss"], device.history["loss"], rtol=1e-4, atol=1e-5
    )


def test_a_host_data_run_resumes_bit_identically(memmap, tmp_path):
    _, mm = memmap

    def run(learner=None, **kw):
        if learner is None:
            learner = _sliced()
        return learner.run(
            jax.random.key(0), STEPS, mm, batch_size=BATCH, progress_bar=False, **kw
        )

    # the plain and the checkpointed run by one learner (one compiled loop);
    # each resumed run by a new one, as a restarted process builds
    first = _sliced()
    plain = run(first)
    ckpt = str(tmp_path / "ckpt")
    run(first, checkpoint_dir=ckpt, checkpoint_every=10)
    shutil.rmtree(os.path.join(ckpt, str(STEPS)))
    shutil.rmtree(os.path.join(ckpt, "30"))
    _same(plain, run(checkpoint_dir=ckpt, checkpoint_every=10))
    # a finished run resumed at its end: nothing left to gather or train
    _same(plain, run(checkpoint_dir=ckpt, checkpoint_every=10))


def test_non_finite_host_rows_are_refused(tmp_path):
    x = np.ones((10, 2), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 row\\(s\\) with NaN"):
        _sliced().run(
            jax.random.key(0), 5, x, batch_size=4, progress_bar=False, host_data=True
        )


def test_the_covariance_of_host_rows_takes_memory_of_one_chunk(monkeypatch):
    # it built a (rows, d, d) array: 155 MB for a 0.76 MB input, and about
    # 295 GB at MNIST's size, on the default EBM sampler's path
    import tracemalloc

    rows = np.random.default_rng(0).normal(size=(2000, 48)).astype(np.float32)
    monkeypatch.setattr(host_data, "BLOCK_BYTES", 48 * 8 * 500)  # 500-row chunks
    data = host_data.HostRows(rows, 10)
    tracemalloc.start()
    cov = np.asarray(data.cov(), np.float64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(cov, np.cov(rows.T.astype(np.float64)), atol=1e-5)
    # a chunk (500 x 48 in float64, twice) and a few (48, 48) sums; the
    # (rows, d, d) array alone was 37 MB
    assert peak < 2_000_000, peak
